// API v1: the XML-RPC methods, as a table of ApiMethod bound to the
// manager's Core and QueryService, independent of the HTTP server so tests
// can call them directly. manager/call_handler.h answers calls with them.
// Reference: schemas/xmlrpc-api.md.
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
  // Exactly one of run and write is set. Both are called for an
  // authenticated caller and throw ApiFault.
  // The answer as an xmlrpc-c value (the probe.*, user.* and node.* methods).
  std::function<xmlrpc_c::value(const UserConfig& caller, const xmlrpc_c::paramList& params)> run;
  // Appends the answer as one XML-RPC <value> element, which is sent as it
  // is, no xmlrpc-c value built (the query.* methods: a page is thousands of
  // values).
  std::function<void(const UserConfig& caller, const xmlrpc_c::paramList& params, XmlAnswer& out)>
      write;
  // The roles that may call it (schemas/xmlrpc-api.md, "Roles").
  std::vector<Role> roles;
};

// Every method of API v1, bound to `book`, `fleet` and `queries`. Each method's `run`
// or `write` checks the caller's role before anything else, and refuses a
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
