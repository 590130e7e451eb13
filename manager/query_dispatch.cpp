#include "manager/query_dispatch.h"

#include <xmlrpc-c/xml.hpp>

#include "common/log.h"
#include "manager/api_types.h"

namespace flexmon::manager {

const UserConfig& authenticated(const Authenticator& auth, std::string_view authorization) {
  const UserConfig* caller = authorization.empty() ? nullptr : auth.authenticate(authorization);
  if (!caller)
    throw ApiFault(kNotAuthenticated,
                   "not authenticated: send HTTP Basic credentials user:token that are "
                   "valid for this manager");
  return *caller;
}

void write_fault_response(int code, const std::string& message, std::string& response) {
  xmlrpc_c::xml::generateResponse(
      xmlrpc_c::rpcOutcome(xmlrpc_c::fault(message, static_cast<xmlrpc_c::fault::code_t>(code))),
      &response);
}

DirectCalls::DirectCalls(const std::vector<ApiMethod>& methods, const Authenticator& auth)
    : auth_(auth) {
  for (const auto& m : methods)
    if (m.write) methods_.emplace(m.name, m);
}

bool DirectCalls::answer(std::string_view method_name, const std::string& body,
                         std::string_view authorization, XmlAnswer& response) const {
  auto found = methods_.find(method_name);
  if (found == methods_.end()) return false;
  const ApiMethod& method = found->second;
  try {
    const UserConfig& caller = authenticated(auth_, authorization);
    std::string name;
    xmlrpc_c::paramList params;
    xmlrpc_c::xml::parseCall(body, &name, &params);
    response.clear();
    response.text.reserve(64 * 1024);
    response.text += kResponseHead;
    method.write(caller, params, response);
    response.text += kResponseTail;
  } catch (const ApiFault& f) {
    response.clear();
    write_fault_response(f.code(), f.what(), response.text);
  } catch (const std::exception& e) {
    logger("manager")->error("{}: internal error: {}", method.name, e.what());
    response.clear();
    write_fault_response(kInternal, "internal error (logged by the manager)", response.text);
  }
  return true;
}

}  // namespace flexmon::manager
