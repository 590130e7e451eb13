// Validation of the probe.* methods' arguments: the probe.request spec (tool,
// paths, interval, tool arguments against config.limits), probe.edit changes,
// request ids; and times, which query filters take too. Every check names the
// argument and its bound in an ApiFault. The readers of single values they
// share with query.* are in manager/xmlrpc_values.h.
#pragma once

#include <optional>
#include <string>

#include <xmlrpc-c/base.hpp>

#include "common/clock.h"
#include "common/config.h"
#include "manager/fault_codes.h"
#include "manager/model.h"

namespace flexmon::manager {

// Checks a probe.request spec against config.limits (those of `role`) and
// config.nodes. Throws ApiFault (kBadArgument, kUnknownNode; kNotPermitted for a
// netns that the role's limits.netns / limits.roles.ROLE.netns does not allow).
RequestSpec parse_spec(const xmlrpc_c::value& spec, const Config& config, Role role = Role::user);

// Whether a probe.request spec asks for a dry run (`dry_run: true`).
bool is_dry_run(const xmlrpc_c::value& spec);

// A probe.edit change set applied to `current`: the new spec, and `for`.
struct Edit {
  RequestSpec spec;
  std::optional<double> for_s;
};
Edit parse_edit(const xmlrpc_c::value& changes, const RequestSpec& current, const Config& config,
                Role role);

// A time: epoch seconds (int, i8 or double) or dateTime.iso8601 (UTC).
UtcNs parse_time(const xmlrpc_c::value& value, const std::string& name);

// A request id argument ("r<N>"); kBadArgument if malformed.
std::uint64_t parse_id_arg(const xmlrpc_c::value& value, const std::string& name);

}  // namespace flexmon::manager
