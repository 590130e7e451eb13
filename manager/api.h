// API v1: the XML-RPC methods, independent of the HTTP server so tests can
// call them directly. Reference: schemas/xmlrpc-api.md.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <xmlrpc-c/base.hpp>

#include "common/config.h"
#include "manager/fleet.h"
#include "manager/query.h"
#include "manager/request_book.h"

namespace flexmon::manager {

struct ApiMethod {
  std::string name;
  std::string signature;  // xmlrpc-c form, e.g. "S:S"
  std::string help;
  // Runs for an authenticated caller; throws ApiFault.
  std::function<xmlrpc_c::value(const UserConfig& caller, const xmlrpc_c::paramList& params)> run;
  // When set: appends the answer as one XML-RPC <value> element, which the
  // server sends as it is (no xmlrpc-c values built); `run` then parses that
  // text back, for callers that go through the registry. Throws ApiFault.
  std::function<void(const UserConfig& caller, const xmlrpc_c::paramList& params, XmlAnswer& out)>
      write;
  // The roles that may call it (schemas/xmlrpc-api.md, "Roles").
  std::vector<Role> roles;
};

// Every method of API v1, bound to `book`, `fleet` and `queries`. Each method's `run`
// and `write` check the caller's role before anything else, and refuse a
// role that is not in `roles` with fault 4030 (role_refusal): the one place
// where roles are enforced, for direct calls, the registry and
// system.multicall alike.
std::vector<ApiMethod> api_methods(const Config& config, RequestBook& book, const Fleet& fleet,
                                   QueryService& queries);

// The message of the 4030 fault for `caller_role` calling `method`, which
// `allowed` may call: "METHOD: not permitted for role ROLE (roles that may
// call it: R1, R2)".
std::string role_refusal(const std::string& method, Role caller_role,
                         const std::vector<Role>& allowed);

// A request as probe.get returns it; with its charged cost when given.
xmlrpc_c::value request_value(const Request& request, const Cost* charged = nullptr);

}  // namespace flexmon::manager
