#include "manager/call_handler.h"

#include <map>
#include <optional>

#include <fmt/format.h>
#include <xmlrpc-c/util.h>
#include <xmlrpc-c/registry.hpp>
#include <xmlrpc-c/xml.hpp>

#include "common/log.h"
#include "manager/api_types.h"
#include "manager/auth.h"
#include "manager/call_guard.h"
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

// xmlrpc-c's own system.shutdown answers fault code 0 (no shutdown function
// is set, and a C++ one cannot fail with a code of ours).
constexpr std::string_view kShutdownRefusal =
    "system.shutdown: not permitted: the manager stops on SIGTERM (systemctl stop), not over "
    "XML-RPC";

// Calls in one system.multicall: each may be a page of 10,000 rows or an
// introspection call without credentials, so a body of 1 MiB must not hold
// tens of thousands of them.
constexpr std::size_t kMaxMulticallCalls = 100;

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
      const auto* http = dynamic_cast<const HttpCallInfo*>(info);
      *result = method_.run(authenticated(auth_, http ? http->authorization : ""), params);
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

// A fault as system.multicall answers one call: {faultCode, faultString}.
void write_fault_struct(int code, std::string_view message, std::string& out) {
  XmlValueWriter w(out);
  w.begin_struct();
  w.member("faultCode");
  w.int32(code);
  w.member("faultString");
  w.string(message);
  w.end_struct();
}

// Appends `value` as xmlrpc-c writes a <value>.
void write_value(const xmlrpc_c::value& value, std::string& out) {
  xmlrpc_env env;
  xmlrpc_env_init(&env);
  xmlrpc_mem_block* block = xmlrpc_mem_block_new(&env, 0);
  xmlrpc_value* c_value = value.cValue();
  if (!env.fault_occurred) xmlrpc_serialize_value(&env, block, c_value);
  xmlrpc_DECREF(c_value);
  if (!env.fault_occurred)
    out.append(XMLRPC_MEMBLOCK_CONTENTS(char, block), XMLRPC_MEMBLOCK_SIZE(char, block));
  if (block) xmlrpc_mem_block_free(block);
  std::string why = env.fault_occurred ? env.fault_string : "";
  xmlrpc_env_clean(&env);
  if (!why.empty()) throw std::runtime_error("xmlrpc-c cannot write a value: " + why);
}

}  // namespace

struct CallHandler::Impl {
  CallGuard guard;
  Authenticator auth;
  std::map<std::string, ApiMethod, std::less<>> methods;
  DirectCalls direct;  // methods that write their own answer (query.*)
  xmlrpc_c::registry registry;
  RateLimitedLog refusals{log(), 10, std::chrono::seconds(60)};

  Impl(const Config& c, std::vector<ApiMethod>& list)
      : guard(c.manager.max_nesting), auth(c.users), direct(list, auth) {
    for (auto& m : list) {
      methods.emplace(m.name, m);
      std::string name = m.name;
      registry.addMethod(name, xmlrpc_c::methodPtr(new AuthMethod(std::move(m), auth)));
    }
    // Process-wide limits of xmlrpc-c's parser, set before any request.
    xmlrpc_limit_set(XMLRPC_XML_SIZE_LIMIT_ID, c.manager.max_request_bytes);
    xmlrpc_limit_set(XMLRPC_NESTING_LIMIT_ID, c.manager.max_nesting);
  }

  // system.multicall, answered here rather than by xmlrpc-c's: its calls of
  // query.* write their answer as the direct call does (the registry's went
  // through each method's `run`, which read its own answer back under the
  // request's size limit and failed with 5000 past it), and its calls of
  // system.shutdown get 4030 (the registry's, fault code 0).
  void multicall(const std::string& body, std::string_view authorization, XmlAnswer& out) const {
    std::string name;
    xmlrpc_c::paramList params;
    xmlrpc_c::xml::parseCall(body, &name, &params);
    out.clear();
    if (params.size() != 1 || params[0].type() != xmlrpc_c::value::TYPE_ARRAY)
      return write_fault_response(kBadArgument,
                                  "system.multicall: expected one argument, an array of calls "
                                  "{methodName, params}",
                                  out.text);
    const auto calls = xmlrpc_c::value_array(params[0]).vectorValueValue();
    if (calls.size() > kMaxMulticallCalls)
      return write_fault_response(kBadArgument,
                                  fmt::format("system.multicall: {} calls, at most {} in one",
                                              calls.size(), kMaxMulticallCalls),
                                  out.text);
    out.text += kResponseHead;
    out.text += "<value><array><data>";
    for (std::size_t i = 0; i < calls.size(); ++i) {
      const std::size_t text_at = out.text.size(), splices_at = out.splices.size();
      // A call that fails leaves only its fault in the answer.
      auto failed = [&](int code, std::string_view message) {
        out.text.resize(text_at);
        out.splices.resize(splices_at);
        write_fault_struct(code, message, out.text);
      };
      try {
        out.text += "<value><array><data>";
        one_call(calls[i], i, authorization, out);
        out.text += "</data></array></value>";
      } catch (const ApiFault& f) {
        failed(f.code(), f.what());
      } catch (const xmlrpc_c::fault& f) {
        failed(static_cast<int>(f.getCode()), f.getDescription());
      } catch (const std::exception& e) {
        log()->error("system.multicall: calls[{}]: internal error: {}", i, e.what());
        failed(kInternal, "internal error (logged by the manager)");
      }
    }
    out.text += "</data></array></value>";
    out.text += kResponseTail;
  }

  // Appends the answer of one call of a multicall; throws its fault.
  void one_call(const xmlrpc_c::value& call, std::size_t i, std::string_view authorization,
                XmlAnswer& out) const {
    const std::string at = fmt::format("system.multicall: calls[{}]", i);
    if (call.type() != xmlrpc_c::value::TYPE_STRUCT)
      throw ApiFault(kBadArgument, at + ": expected a struct {methodName, params}");
    const auto fields = xmlrpc_c::value_struct(call).cvalue();
    const auto name = fields.find("methodName");
    const auto args = fields.find("params");
    if (fields.size() != 2 || name == fields.end() || args == fields.end() ||
        name->second.type() != xmlrpc_c::value::TYPE_STRING ||
        args->second.type() != xmlrpc_c::value::TYPE_ARRAY)
      throw ApiFault(kBadArgument,
                     at + ": expected a struct of methodName (a string) and params (an array)");
    const std::string method = xmlrpc_c::value_string(name->second).cvalue();
    xmlrpc_c::paramList params;
    for (const auto& arg : xmlrpc_c::value_array(args->second).vectorValueValue()) params.add(arg);
    if (method == "system.multicall")
      throw ApiFault(kBadArgument, at + ": system.multicall cannot call system.multicall");
    if (method == "system.shutdown") throw ApiFault(kNotPermitted, std::string(kShutdownRefusal));
    if (auto found = methods.find(method); found != methods.end()) {
      const ApiMethod& m = found->second;
      const UserConfig& caller = authenticated(auth, authorization);
      if (m.write)
        m.write(caller, params, out);
      else
        write_value(m.run(caller, params), out.text);
      return;
    }
    // Introspection (system.listMethods, ...) and names of no method: the
    // registry answers them as it answers such a call alone. Its answers
    // are small.
    std::string single, response;
    xmlrpc_c::xml::generateCall(method, params, &single);
    HttpCallInfo info;
    info.authorization = std::string(authorization);
    registry.processCall(single, &info, &response);
    xmlrpc_c::rpcOutcome outcome;
    xmlrpc_c::xml::parseResponse(response, &outcome);
    if (!outcome.succeeded()) throw outcome.getFault();
    write_value(outcome.getResult(), out.text);
  }
};

CallHandler::CallHandler(const Config& config, std::vector<ApiMethod> methods)
    : impl_(std::make_unique<Impl>(config, methods)) {}

CallHandler::~CallHandler() = default;

void CallHandler::answer(const std::string& body, std::string_view authorization,
                         XmlAnswer& out) const {
  auto checked = impl_->guard.check(body);
  if (const auto* refusal = std::get_if<CallRefusal>(&checked)) {
    // The message quotes outside bytes only through escaped().
    impl_->refusals.warn("XML-RPC: refused a call with fault {}: {}",
                         static_cast<int>(refusal->code), refusal->message);
    out.clear();
    return write_fault_response(refusal->code, refusal->message, out.text);
  }
  const std::string& method = std::get<CheckedCall>(checked).method;
  if (method == "system.multicall") return impl_->multicall(body, authorization, out);
  if (method == "system.shutdown") {
    out.clear();
    return write_fault_response(kNotPermitted, std::string(kShutdownRefusal), out.text);
  }
  if (impl_->direct.answer(method, body, authorization, out)) return;
  HttpCallInfo info;
  info.authorization = std::string(authorization);
  impl_->registry.processCall(body, &info, &out.text);
}

}  // namespace flexmon::manager
