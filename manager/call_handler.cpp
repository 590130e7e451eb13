#include "manager/call_handler.h"

#include <xmlrpc-c/util.h>
#include <xmlrpc-c/registry.hpp>

#include "common/log.h"
#include "manager/api_types.h"
#include "manager/auth.h"
#include "manager/query_dispatch.h"

namespace flexmon::manager {

namespace {

auto log() { return logger("manager"); }

// What a call carries from its HTTP request to the method: the
// Authorization header (empty when absent).
class HttpCallInfo : public xmlrpc_c::callInfo {
 public:
  std::string authorization;
};

xmlrpc_c::fault make_fault(int code, const std::string& message) {
  return xmlrpc_c::fault(message, static_cast<xmlrpc_c::fault::code_t>(code));
}

// One API method behind authentication, with every exception caught here.
class AuthMethod : public xmlrpc_c::method2 {
 public:
  AuthMethod(ApiMethod method, const Authenticator& auth)
      : method_(std::move(method)), auth_(auth) {
    _signature = method_.signature;
    _help = method_.help;
  }

  void execute(const xmlrpc_c::paramList& params, const xmlrpc_c::callInfo* info,
               xmlrpc_c::value* result) override {
    try {
      const UserConfig* caller = nullptr;
      if (auto* http = dynamic_cast<const HttpCallInfo*>(info))
        if (!http->authorization.empty()) caller = auth_.authenticate(http->authorization);
      if (!caller)
        throw ApiFault(kNotAuthenticated,
                       "not authenticated: send HTTP Basic credentials user:token that are "
                       "valid for this manager");
      *result = method_.run(*caller, params);
    } catch (const ApiFault& f) {
      throw make_fault(f.code(), f.what());
    } catch (const xmlrpc_c::fault&) {
      throw;
    } catch (const std::exception& e) {
      log()->error("{}: internal error: {}", method_.name, e.what());
      throw make_fault(kInternal, "internal error (logged by the manager)");
    } catch (...) {
      log()->error("{}: internal error: unknown exception", method_.name);
      throw make_fault(kInternal, "internal error (logged by the manager)");
    }
  }

 private:
  ApiMethod method_;
  const Authenticator& auth_;
};

}  // namespace

struct CallHandler::Impl {
  Authenticator auth;
  DirectCalls direct;  // methods that write their own answer (query.*)
  xmlrpc_c::registry registry;

  Impl(const Config& c, std::vector<ApiMethod>& methods) : auth(c.users), direct(methods, auth) {
    for (auto& m : methods) {
      std::string name = m.name;
      registry.addMethod(name, xmlrpc_c::methodPtr(new AuthMethod(std::move(m), auth)));
    }
    // Process-wide limits of the XML parser, set before any request.
    xmlrpc_limit_set(XMLRPC_XML_SIZE_LIMIT_ID, c.manager.max_request_bytes);
    xmlrpc_limit_set(XMLRPC_NESTING_LIMIT_ID, c.manager.max_nesting);
  }
};

CallHandler::CallHandler(const Config& config, std::vector<ApiMethod> methods)
    : impl_(std::make_unique<Impl>(config, methods)) {}

CallHandler::~CallHandler() = default;

void CallHandler::answer(const std::string& body, std::string_view authorization,
                         XmlAnswer& out) const {
  if (impl_->direct.answer(body, authorization, out)) return;
  HttpCallInfo info;
  info.authorization = std::string(authorization);
  impl_->registry.processCall(body, &info, &out.text);
}

}  // namespace flexmon::manager
