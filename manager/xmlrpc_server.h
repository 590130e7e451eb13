// The XML-RPC endpoint's transport: HTTP/1.1 keep-alive connections, plain
// or TLS (read with Boost.Beast's parser, common/http_request.h), under
// deadlines and connection limits (schemas/xmlrpc-api.md, "Transport"),
// whose bodies manager/call_handler.h answers.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/config.h"
#include "manager/api.h"

namespace flexmon::manager {

class XmlRpcServer {
 public:
  // Binds config.manager.xmlrpc (port 0: an ephemeral port); throws on
  // failure, naming the config key: an unusable TLS file, or plain HTTP on
  // an address that is not loopback without manager.insecure_plaintext.
  XmlRpcServer(const Config& config, std::vector<ApiMethod> methods);
  ~XmlRpcServer();
  void start();
  // Prompt: stops accepting and closes every connection; calls being
  // answered finish first.
  void stop();
  std::uint16_t port() const;

 private:
  struct Impl;
  class Connection;  // one client's, in xmlrpc_server.cpp
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexmon::manager
