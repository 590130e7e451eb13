// API v1: the XML-RPC methods, independent of the HTTP server so tests can
// call them directly. Reference: schemas/xmlrpc-api.md.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <xmlrpc-c/base.hpp>

#include "common/config.h"
#include "manager/core.h"
#include "manager/query.h"

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
};

// Every method of API v1, bound to `core` and `queries`.
std::vector<ApiMethod> api_methods(const Config& config, Core& core, QueryService& queries);

// A request as probe.get returns it; with its charged cost when given.
xmlrpc_c::value request_value(const Request& request, const Cost* charged = nullptr);

}  // namespace flexmon::manager
