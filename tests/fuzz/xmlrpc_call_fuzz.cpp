// libFuzzer target: an XML-RPC request body as the manager now reads it.
// CallGuard (manager/call_guard.h) checks it; what passes goes to xmlrpc-c
// 1.33's parser, with the manager's limits (configure_xmlrpc_limits for the
// config's defaults, as the manager's main sets them), and its parameters to
// the argument checks of the methods (query filters, probe.request specs).
// Whatever comes in: a refusal with a fault of the documented codes that
// says something, or a call that xmlrpc-c parses (no crash, no fault: the
// check accepts nothing that xmlrpc-c cannot read) into the method the
// check named, and argument checks that end in a value or an ApiFault.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <variant>

#include <xmlrpc-c/base.hpp>
#include <xmlrpc-c/xml.hpp>

#include "common/config.h"
#include "manager/call_guard.h"
#include "manager/call_handler.h"
#include "manager/fault_codes.h"
#include "manager/query.h"
#include "manager/spec.h"

namespace {

using namespace flexmon;
using namespace flexmon::manager;

const Config& config() {
  static const Config c = parse_config(R"(
manager:
  state_db: manager.db
collector:
  cache_db: cache.db
nodes:
  - {id: n1, site: a, address: 127.0.0.1, key: 000102030405060708090a0b0c0d0e0f}
  - {id: n2, site: b, address: 127.0.0.2, key: 101112131415161718191a1b1c1d1e1f}
users:
  - {name: bob, role: user, token_hash: "hmac-sha256:26:101112131415161718191a1b1c1d1e1f:71509f680090cccbc12d208413efa7fd231c170d24d1453f96718eed39c8ecfd"}
)",
                                       "fuzz.yaml", "/fuzz");
  return c;
}

[[noreturn]] void broken(const char* what, std::string_view detail) {
  std::fprintf(stderr, "xmlrpc_call_fuzz: %s: %.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

// The methods' argument checks must end in a value or an ApiFault.
void check_arguments(const xmlrpc_c::paramList& params) {
  for (QueryKind kind : {QueryKind::latency, QueryKind::abw, QueryKind::throughput,
                         QueryKind::summary, QueryKind::paths}) {
    try {
      (void)parse_query_args(kind, params, config());
    } catch (const ApiFault&) {
    }
  }
  if (params.size() == 0) return;
  try {
    (void)parse_spec(params[0], config(), Role::user);
  } catch (const ApiFault&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool limits_set = [] {
    configure_xmlrpc_limits(config().manager);
    return true;
  }();
  (void)limits_set;
  const std::string body(reinterpret_cast<const char*>(data), size);
  static const CallGuard guard(config().manager.max_nesting);
  auto checked = guard.check(body);
  if (const auto* refusal = std::get_if<CallRefusal>(&checked)) {
    if (refusal->code != kParseError && refusal->code != kBadArgument)
      broken("refusal with an undocumented code", refusal->message);
    if (refusal->message.empty()) broken("refusal without a message", body);
    return 0;
  }
  const std::string& method = std::get<CheckedCall>(checked).method;
  std::string name;
  xmlrpc_c::paramList params;
  try {
    xmlrpc_c::xml::parseCall(body, &name, &params);
  } catch (const std::exception& e) {
    broken("xmlrpc-c refused a body that the check passed", e.what());
  }
  if (name != method) broken("xmlrpc-c read another method name", name);
  try {
    check_arguments(params);
  } catch (const std::exception& e) {
    broken("an argument check threw what is not an ApiFault", e.what());
  } catch (...) {
    broken("an argument check threw what is not an exception", method);
  }
  return 0;
}
