#include "clients/rpc_client.h"

#include <xmlrpc-c/client.hpp>
#include <xmlrpc-c/girerr.hpp>

#include <fmt/format.h>

namespace flexmon {

Result<RpcEndpoint> parse_rpc_url(const std::string& url) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos)
    return fail(ErrorCode::kInvalidInput,
                fmt::format("'{}' is not a URL (expected http://USER:TOKEN@HOST:PORT/RPC2)", url));
  std::string scheme = url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https")
    return fail(ErrorCode::kInvalidInput,
                fmt::format("unsupported URL scheme '{}' (expected http or https)", scheme));
  std::string rest = url.substr(scheme_end + 3);
  auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "/RPC2" : rest.substr(slash);
  RpcEndpoint endpoint;
  auto at = authority.rfind('@');
  if (at != std::string::npos) {
    std::string userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    auto colon = userinfo.find(':');
    endpoint.user = userinfo.substr(0, colon);
    if (colon != std::string::npos) endpoint.token = userinfo.substr(colon + 1);
  }
  if (authority.empty())
    return fail(ErrorCode::kInvalidInput, fmt::format("URL '{}' has no host", url));
  endpoint.url = scheme + "://" + authority + path;
  return endpoint;
}

namespace {

xmlrpc_c::clientXmlTransport_curl::constrOpt transport_options(unsigned timeout_ms,
                                                               const RpcTls& tls) {
  xmlrpc_c::clientXmlTransport_curl::constrOpt options;
  options.timeout(timeout_ms);
  if (!tls.ca_file.empty()) options.cainfo(tls.ca_file);
  if (!tls.cert_file.empty()) options.ssl_cert(tls.cert_file);
  if (!tls.key_file.empty()) options.sslkey(tls.key_file);
  return options;
}

}  // namespace

struct RpcClient::Impl {
  RpcEndpoint endpoint;
  xmlrpc_c::clientXmlTransport_curl transport;
  xmlrpc_c::client_xml client;
  xmlrpc_c::carriageParm_curl0 carriage;

  Impl(RpcEndpoint e, unsigned timeout_ms, const RpcTls& tls)
      : endpoint(std::move(e)),
        transport(transport_options(timeout_ms, tls)),
        client(&transport),
        carriage(endpoint.url) {
    if (!endpoint.user.empty()) {
      carriage.setUser(endpoint.user, endpoint.token);
      carriage.allowAuthBasic();
    }
  }
};

RpcClient::RpcClient(RpcEndpoint endpoint, unsigned timeout_ms, RpcTls tls)
    : impl_(std::make_unique<Impl>(std::move(endpoint), timeout_ms, tls)) {}

RpcClient::~RpcClient() = default;

std::variant<xmlrpc_c::value, RpcFailure> RpcClient::call(const std::string& method,
                                                          const xmlrpc_c::paramList& params) {
  try {
    xmlrpc_c::rpcPtr rpc(method, params);
    rpc->call(&impl_->client, &impl_->carriage);
    if (rpc->isSuccessful()) return rpc->getResult();
    xmlrpc_c::fault fault = rpc->getFault();
    return RpcFailure{fault.getCode(), fault.getDescription()};
  } catch (const girerr::error& e) {
    return RpcFailure{0, fmt::format("{}: {}", impl_->endpoint.url, e.what())};
  } catch (const std::exception& e) {
    return RpcFailure{0, fmt::format("{}: {}", impl_->endpoint.url, e.what())};
  }
}

}  // namespace flexmon
