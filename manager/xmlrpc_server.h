// The XML-RPC endpoint's transport: HTTP/1.1 keep-alive connections (read
// with Boost.Beast's parser, common/http_request.h) under explicit limits,
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
  // Binds config.manager.xmlrpc (port 0: an ephemeral port); throws on failure.
  XmlRpcServer(const Config& config, std::vector<ApiMethod> methods);
  ~XmlRpcServer();
  void start();
  // Prompt: stops accepting and closes idle keep-alive connections.
  void stop();
  std::uint16_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexmon::manager
