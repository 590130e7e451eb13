#include "manager/call_handler.h"

#include <map>
#include <optional>

#include <fmt/format.h>
#include <xmlrpc-c/util.h>
#include <xmlrpc-c/registry.hpp>
#include <xmlrpc-c/xml.hpp>

#include "common/log.h"
#include "manager/auth.h"
#include "manager/call_guard.h"
#include "manager/fault_codes.h"
#include "manager/xmlrpc_values.h"

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

// The message of the fault that ends a call on a bug or a failing disk; the
// log has the details.
constexpr std::string_view kInternalMessage = "internal error (logged by the manager)";

// The user that `authorization` (an Authorization header, empty when
// absent) proves. Throws ApiFault 4010 when it proves none.
const UserConfig& authenticated(const Authenticator& auth, std::string_view authorization) {
  const UserConfig* caller = authorization.empty() ? nullptr : auth.authenticate(authorization);
  if (!caller)
    throw ApiFault(kNotAuthenticated,
                   "not authenticated: send HTTP Basic credentials user:token that are "
                   "valid for this manager");
  return *caller;
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

// One API method in xmlrpc-c's registry, behind authentication, with every
// exception caught here. The registry calls the methods with `run`; it
// lists every method for introspection (system.listMethods, ...), and the
// methods with `write` are answered before it (CallHandler::Impl::direct).
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
      if (!method_.run) throw std::logic_error("a method with write reached the registry");
      const auto* http = dynamic_cast<const HttpCallInfo*>(info);
      *result = method_.run(authenticated(auth_, http ? http->authorization : ""), params);
    } catch (const ApiFault& f) {
      throw make_fault(f.code(), f.what());
    } catch (const xmlrpc_c::fault&) {
      throw;
    } catch (const std::exception& e) {
      log()->error("{}: internal error: {}", method_.name, e.what());
      throw make_fault(kInternal, std::string(kInternalMessage));
    } catch (...) {
      log()->error("{}: internal error: unknown exception", method_.name);
      throw make_fault(kInternal, std::string(kInternalMessage));
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
  xmlrpc_c::registry registry;
  RateLimitedLog refusals{log(), 10, std::chrono::seconds(60)};

  Impl(const Config& c, std::vector<ApiMethod>& list)
      : guard(c.manager.max_nesting), auth(c.users) {
    for (auto& m : list) {
      methods.emplace(m.name, m);
      std::string name = m.name;
      registry.addMethod(name, xmlrpc_c::methodPtr(new AuthMethod(std::move(m), auth)));
    }
  }

  // A call of a method with `write` (query.*), answered without the
  // registry so that no xmlrpc-c value is built for a large answer: parses
  // `body` (which CallGuard passed) and writes the whole methodResponse, the
  // answer or a fault.
  void direct(const ApiMethod& method, const std::string& body, std::string_view authorization,
              XmlAnswer& out) const {
    try {
      const UserConfig& caller = authenticated(auth, authorization);
      std::string name;
      xmlrpc_c::paramList params;
      xmlrpc_c::xml::parseCall(body, &name, &params);
      out.clear();
      out.text.reserve(64 * 1024);
      write_method_response(out.text, [&] { method.write(caller, params, out); });
    } catch (const ApiFault& f) {
      out.clear();
      write_fault_response(f.code(), f.what(), out.text);
    } catch (const std::exception& e) {
      log()->error("{}: internal error: {}", method.name, e.what());
      out.clear();
      write_fault_response(kInternal, std::string(kInternalMessage), out.text);
    }
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
    write_method_response(out.text, [&] { multicall_answers(calls, authorization, out); });
  }

  // The <value> of a multicall's answer: an array with, for each call, its
  // answer in an array of one or its fault.
  void multicall_answers(const std::vector<xmlrpc_c::value>& calls, std::string_view authorization,
                         XmlAnswer& out) const {
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
        failed(kInternal, kInternalMessage);
      }
    }
    out.text += "</data></array></value>";
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

void configure_xmlrpc_limits(const ManagerConfig& manager) {
  xmlrpc_limit_set(XMLRPC_XML_SIZE_LIMIT_ID, manager.max_request_bytes);
  xmlrpc_limit_set(XMLRPC_NESTING_LIMIT_ID, manager.max_nesting);
}

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
  if (auto found = impl_->methods.find(method);
      found != impl_->methods.end() && found->second.write)
    return impl_->direct(found->second, body, authorization, out);
  HttpCallInfo info;
  info.authorization = std::string(authorization);
  impl_->registry.processCall(body, &info, &out.text);
}

}  // namespace flexmon::manager
