// An XML-RPC client for flexmon's API (xmlrpc-c over curl), with the endpoint
// and credentials taken from one URL: http://USER:TOKEN@HOST:PORT/RPC2.
#pragma once

#include <memory>
#include <string>

#include <xmlrpc-c/base.hpp>

#include "common/result.h"

namespace flexmon {

struct RpcEndpoint {
  std::string url;  // without credentials
  std::string user;
  std::string token;
};

// Splits "http://user:token@host:port/RPC2"; an error names what is missing.
Result<RpcEndpoint> parse_rpc_url(const std::string& url);

// A failed call: a fault from the server (code != 0) or a transport failure
// (code 0: connection refused, timeout, HTTP error).
struct RpcFailure {
  int code = 0;
  std::string message;
};

// How an https:// endpoint is trusted, and how this client proves who it is
// when the manager asks for a client certificate (manager.tls_client_ca).
// Empty: the system's CAs, no client certificate.
struct RpcTls {
  std::string ca_file;    // PEM: the CA(s) that signed the manager's certificate
  std::string cert_file;  // PEM: this client's certificate
  std::string key_file;   // PEM: its key
};

class RpcClient {
 public:
  explicit RpcClient(RpcEndpoint endpoint, unsigned timeout_ms = 30'000, RpcTls tls = {});
  ~RpcClient();

  // Calls `method`; on failure returns the fault or transport error.
  std::variant<xmlrpc_c::value, RpcFailure> call(const std::string& method,
                                                 const xmlrpc_c::paramList& params);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexmon
