#include "manager/query_dispatch.h"

#include <cctype>

#include <xmlrpc-c/xml.hpp>

#include "common/log.h"
#include "manager/api_types.h"

namespace flexmon::manager {

namespace {

// The text between <methodName> and </methodName>, trimmed; empty if none.
std::string_view method_name_of(std::string_view body) {
  constexpr std::string_view kOpen = "<methodName>", kClose = "</methodName>";
  auto open = body.find(kOpen);
  if (open == std::string_view::npos) return {};
  auto start = open + kOpen.size();
  auto close = body.find(kClose, start);
  if (close == std::string_view::npos) return {};
  std::string_view name = body.substr(start, close - start);
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.front())))
    name.remove_prefix(1);
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back())))
    name.remove_suffix(1);
  return name;
}

void fault_response(int code, const std::string& message, std::string& response) {
  xmlrpc_c::xml::generateResponse(
      xmlrpc_c::rpcOutcome(xmlrpc_c::fault(message, static_cast<xmlrpc_c::fault::code_t>(code))),
      &response);
}

}  // namespace

DirectCalls::DirectCalls(const std::vector<ApiMethod>& methods, const Authenticator& auth)
    : auth_(auth) {
  for (const auto& m : methods)
    if (m.write) methods_.emplace(m.name, m);
}

bool DirectCalls::answer(const std::string& body, std::string_view authorization,
                         XmlAnswer& response) const {
  auto found = methods_.find(method_name_of(body));
  if (found == methods_.end()) return false;
  const ApiMethod& method = found->second;
  std::string name;
  xmlrpc_c::paramList params;
  try {
    xmlrpc_c::xml::parseCall(body, &name, &params);
  } catch (const std::exception&) {
    return false;  // the registry answers it with its own fault
  }
  if (name != method.name) return false;
  try {
    const UserConfig* caller = authorization.empty() ? nullptr : auth_.authenticate(authorization);
    if (!caller)
      throw ApiFault(kNotAuthenticated,
                     "not authenticated: send HTTP Basic credentials user:token that are "
                     "valid for this manager");
    response.clear();
    response.text.reserve(64 * 1024);
    response.text += kResponseHead;
    method.write(*caller, params, response);
    response.text += kResponseTail;
  } catch (const ApiFault& f) {
    response.clear();
    fault_response(f.code(), f.what(), response.text);
  } catch (const std::exception& e) {
    logger("manager")->error("{}: internal error: {}", method.name, e.what());
    response.clear();
    fault_response(kInternal, "internal error (logged by the manager)", response.text);
  }
  return true;
}

}  // namespace flexmon::manager
