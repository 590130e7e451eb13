// One XML-RPC call, from the body of an HTTP request to its methodResponse:
// the check of the body (manager/call_guard.h) before any parser of
// xmlrpc-c reads it, authentication, the methods that write their own answer
// (query.*), system.multicall and system.shutdown (answered here), and
// xmlrpc-c's registry for the rest. The transport (manager/xmlrpc_server.h)
// hands bodies here and sends back what this writes.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "manager/api.h"

namespace flexmon::manager {

// Sets xmlrpc-c's limits on what its parser reads to manager.max_request_bytes
// (a document's size) and manager.max_nesting (of values). xmlrpc-c keeps
// them process-wide, for every parse in the process (a client's of responses
// too), so the manager's main sets them once, before the server answers a
// call; a test or fuzz target that answers calls in its own process calls
// this itself. Unset, xmlrpc-c's defaults (512 KiB, 64 levels) would refuse
// bodies that manager.max_request_bytes lets in.
void configure_xmlrpc_limits(const ManagerConfig& manager);

class CallHandler {
 public:
  CallHandler(const Config& config, std::vector<ApiMethod> methods);
  ~CallHandler();
  CallHandler(const CallHandler&) = delete;
  CallHandler& operator=(const CallHandler&) = delete;

  // Writes the methodResponse (an answer or a fault) for `body` to `out`;
  // xmlrpc-c's limits are configure_xmlrpc_limits's.
  // `authorization` is the request's Authorization header (empty when
  // absent). A body that is not an XML-RPC call gets a fault that says why
  // (-32700, or 4001 for a value that is not of its type). Thread-safe.
  // Throws only on a bug (the transport then answers 400).
  void answer(const std::string& body, std::string_view authorization, XmlAnswer& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexmon::manager
