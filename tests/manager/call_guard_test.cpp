// Bodies that xmlrpc-c 1.33 crashed on, expanded without bound or misread,
// sent down the real parsing path (CallHandler::answer: the check, then
// xmlrpc-c's registry or parser) and to the running manager; every refusal
// names what was wrong. Calls as xmlrpc-c's and Python's clients write them
// pass. Before manager/call_guard.h, the <i8> cases below killed the test
// binary with SIGSEGV inside xmlrpc-c.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include <xmlrpc-c/base.hpp>
#include <xmlrpc-c/xml.hpp>

#include "common/log.h"
#include "manager/call_guard.h"
#include "manager/call_handler.h"
#include "manager/manager.h"
#include "tests/manager/http_post.h"
#include "tests/manager/test_config.h"

namespace flexmon::manager {
namespace {

// The codes schemas/xmlrpc-api.md gives refusals of a body.
constexpr int kParseErrorCode = -32700;
constexpr int kBadArgumentCode = 4001;

struct Fault {
  int code = 0;
  std::string message;
};

// The fault in a methodResponse; code 1 and the text when it is an answer.
Fault fault_of(const std::string& response) {
  xmlrpc_c::rpcOutcome outcome;
  xmlrpc_c::xml::parseResponse(response, &outcome);
  if (outcome.succeeded()) return {1, "answered: " + response};
  // As int: xmlrpc-c's code_t enum has no enumerator for our codes.
  return {static_cast<int>(outcome.getFault().getCode()), outcome.getFault().getDescription()};
}

std::string call_of(const std::string& method, const std::string& params) {
  return "<?xml version=\"1.0\"?><methodCall><methodName>" + method + "</methodName><params>" +
         params + "</params></methodCall>";
}

std::string one_param(const std::string& value) {
  return call_of("probe.get", "<param>" + value + "</param>");
}

class CallGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir();
    config_ = testing::test_config(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The answer of a CallHandler (with no methods of the API: what a body
  // costs before any method runs) to `body`.
  Fault answer(const std::string& body) {
    if (!handler_) {
      configure_xmlrpc_limits(config_.manager);
      handler_ = std::make_unique<CallHandler>(config_, std::vector<ApiMethod>{});
    }
    XmlAnswer out;
    handler_->answer(body, "", out);
    return fault_of(out.flattened());
  }

  std::filesystem::path dir_;
  Config config_;
  std::unique_ptr<CallHandler> handler_;
};

struct Refused {
  std::string value;  // one parameter's <value>
  int code;
  std::string message;
};

// The issue's cases: an <i8> out of range or not a number segfaulted
// xmlrpc-c 1.33 (a format string with a missing argument), for any method,
// and so did these siblings of them.
TEST_F(CallGuardTest, I8ThatIsNoInt64IsRefusedNotACrash) {
  const std::string range = "is not an integer in -9223372036854775808..9223372036854775807";
  for (std::string text : {"9223372036854775808", "-9223372036854775809", "18446744073709551616",
                           "abc", "1x", "5 ", "5\t", "-", "+", "--5", "0x10"}) {
    EXPECT_EQ(answer(one_param("<value><i8>" + text + "</i8></value>")).message,
              "params[0]: <i8> value '" + escaped(text) + "' " + range);
  }
  const Fault apache = answer(one_param("<value><ex:i8>1x</ex:i8></value>"));
  EXPECT_EQ(apache.code, kBadArgumentCode);
  EXPECT_EQ(apache.message, "params[0]: <ex:i8> value '1x' " + range);
  // Any method name, known or not, and deep inside a value.
  const Fault nested = answer(call_of(
      "no.such.method",
      "<param><value><array><data><value>1</value><value><struct><member><name>seq</name>"
      "<value><i8>1x</i8></value></member></struct></value></data></array></value></param>"));
  EXPECT_EQ(nested.code, kBadArgumentCode);
  EXPECT_EQ(nested.message, "params[0][1].seq: <i8> value '1x' " + range);
}

TEST_F(CallGuardTest, ScalarsThatAreNotOfTheirTypeAreRefusedNamingTypeAndValue) {
  const std::vector<Refused> cases = {
      {"<value><int>2147483648</int></value>", kBadArgumentCode,
       "<int> value '2147483648' is not an integer in -2147483648..2147483647"},
      {"<value><i4>1x</i4></value>", kBadArgumentCode,
       "<i4> value '1x' is not an integer in -2147483648..2147483647"},
      {"<value><int></int></value>", kBadArgumentCode,
       "<int> value '' is not an integer in -2147483648..2147483647"},
      {"<value><int> 5</int></value>", kBadArgumentCode,
       "<int> value ' 5' is not an integer in -2147483648..2147483647"},
      {"<value><i8></i8></value>", kBadArgumentCode,
       "<i8> value '' is not an integer in -9223372036854775808..9223372036854775807"},
      {"<value><boolean>true</boolean></value>", kBadArgumentCode,
       "<boolean> value 'true' is not 0 or 1"},
      {"<value><boolean></boolean></value>", kBadArgumentCode, "<boolean> value '' is not 0 or 1"},
      // xmlrpc-c took these as numbers (strtod): XML-RPC has no such doubles.
      {"<value><double>nan</double></value>", kBadArgumentCode,
       "<double> value 'nan' is not a decimal number (like -12.5, or 1.5e-07)"},
      {"<value><double>inf</double></value>", kBadArgumentCode,
       "<double> value 'inf' is not a decimal number (like -12.5, or 1.5e-07)"},
      {"<value><double>0x10</double></value>", kBadArgumentCode,
       "<double> value '0x10' is not a decimal number (like -12.5, or 1.5e-07)"},
      {"<value><double> 1.5</double></value>", kBadArgumentCode,
       "<double> value ' 1.5' is not a decimal number (like -12.5, or 1.5e-07)"},
      {"<value><double></double></value>", kBadArgumentCode,
       "<double> value '' is not a decimal number (like -12.5, or 1.5e-07)"},
      {"<value><double>1e999</double></value>", kBadArgumentCode,
       "<double> value '1e999' is beyond the largest double (1.7976931348623157e308)"},
      {"<value><double>" + std::string(400, '9') + "</double></value>", kBadArgumentCode,
       "<double> value '" + std::string(48, '9') +
           "...(352 more bytes)' is beyond the largest double (1.7976931348623157e308)"},
      {"<value><double>1e-400</double></value>", kBadArgumentCode,
       "<double> value '1e-400' is below the smallest normal double "
       "(2.2250738585072014e-308): write 0"},
      {"<value><dateTime.iso8601>20260231T00:00:00</dateTime.iso8601></value>", kBadArgumentCode,
       "<dateTime.iso8601> value '20260231T00:00:00' is not a date: February 2026 has 28 days"},
      {"<value><dateTime.iso8601>21000229T00:00:00</dateTime.iso8601></value>", kBadArgumentCode,
       "<dateTime.iso8601> value '21000229T00:00:00' is not a date: February 2100 has 28 days"},
      {"<value><dateTime.iso8601>20261301T00:00:00</dateTime.iso8601></value>", kBadArgumentCode,
       "<dateTime.iso8601> value '20261301T00:00:00' is not a date: month 13 is not 01..12"},
      {"<value><dateTime.iso8601>20260430T24:00:00</dateTime.iso8601></value>", kBadArgumentCode,
       "<dateTime.iso8601> value '20260430T24:00:00' is not a time: hour 24 is not 00..23"},
      {"<value><dateTime.iso8601>20260430T23:59:60</dateTime.iso8601></value>", kBadArgumentCode,
       "<dateTime.iso8601> value '20260430T23:59:60' is not a time: second 60 is not 00..59"},
      {"<value><dateTime.iso8601>2026-02-03T12:00:00</dateTime.iso8601></value>", kBadArgumentCode,
       "<dateTime.iso8601> value '2026-02-03T12:00:00' is not a date and time like "
       "20260203T12:00:00 (UTC; up to 6 digits of fraction may follow a point)"},
      {"<value><dateTime.iso8601></dateTime.iso8601></value>", kBadArgumentCode,
       "<dateTime.iso8601> value '' is not a date and time like 20260203T12:00:00 (UTC; up to 6 "
       "digits of fraction may follow a point)"},
      {"<value><base64>!!!!</base64></value>", kBadArgumentCode,
       "<base64> has '!', which is not a base64 symbol"},
      {"<value><base64>YQ</base64></value>", kBadArgumentCode,
       "<base64> does not end on a group of 4 symbols (padding is missing)"},
      {"<value><base64>YR==</base64></value>", kBadArgumentCode,
       "<base64> has bits after its last byte"},
      {"<value><base64>a=b=</base64></value>", kBadArgumentCode,
       "<base64> has '=' where no padding can be"},
      {"<value><string>\xf0\x9f\x98\x80</string></value>", kBadArgumentCode,
       "a character beyond U+FFFF, which this server's XML-RPC library (xmlrpc-c 1.33) cannot "
       "read"},
      {"<value><nil>x</nil></value>", kParseErrorCode,
       "text 'x' inside <nil>, which holds nothing"},
      {"<value>x<i4>1</i4></value>", kParseErrorCode,
       "<i4> inside <value>, which holds text or one element of a type"},
      {"<value><i4>1</i4>x</value>", kParseErrorCode,
       "text 'x' inside <value>, which holds text or one element of a type"},
      {"<value><i4>1</i4><i4>2</i4></value>", kParseErrorCode,
       "<i4> inside <value>, which holds text or one element of a type"},
      {"<value><i4 a=\"b\">1</i4></value>", kParseErrorCode,
       "<i4> has an attribute 'a': XML-RPC's elements have none"},
      {"<value><i4><b/>1</i4></value>", kParseErrorCode, "<b> inside <i4>, which holds only text"},
      {"<value><i1>5</i1></value>", kParseErrorCode,
       "<i1> is not a type of XML-RPC (string, int, i4, i8, boolean, double, dateTime.iso8601, "
       "base64, struct, array, nil)"},
      {"<value><struct><member><value>1</value><name>a</name></member></struct></value>",
       kParseErrorCode, "<value> inside <member>, which holds a <name> and then a <value>"},
      {"<value><struct><member><name>a</name></member></struct></value>", kParseErrorCode,
       "<member> has no <value> after its <name>"},
      {"<value><struct>x</struct></value>", kParseErrorCode,
       "text 'x' inside <struct>, which holds only <member>s"},
      {"<value><array></array></value>", kParseErrorCode, "<array> has no <data>"},
      {"<value><array><data>x</data></array></value>", kParseErrorCode,
       "text 'x' inside <data>, which holds only <value>s"},
  };
  for (const auto& c : cases) {
    const Fault f = answer(one_param(c.value));
    EXPECT_EQ(f.code, c.code) << c.value << ": " << f.message;
    EXPECT_EQ(f.message, "params[0]: " + c.message) << c.value;
  }
}

// Item 5 of the issue: an impossible date in a query filter is refused with
// 4001 naming the key and the value.
TEST_F(CallGuardTest, ImpossibleDateInAFilterIsRefusedNamingKeyAndValue) {
  const Fault f = answer(
      call_of("query.latency",
              "<param><value><struct><member><name>from</name><value><dateTime.iso8601>"
              "20260231T00:00:00</dateTime.iso8601></value></member></struct></value></param>"));
  EXPECT_EQ(f.code, kBadArgumentCode);
  EXPECT_EQ(f.message,
            "params[0].from: <dateTime.iso8601> value '20260231T00:00:00' is not a date: "
            "February 2026 has 28 days");
}

// A 538-byte body whose entities expand to 128 MB cost 5-7.5 s of CPU per
// request, and the memory stayed.
std::string entity_bomb() {
  std::string body = "<?xml version=\"1.0\"?>\n<!DOCTYPE methodCall [\n<!ENTITY a0 \"lol\">\n";
  for (int i = 1; i <= 9; ++i)
    body += "<!ENTITY a" + std::to_string(i) + " \"" + [&] {
      std::string refs;
      for (int k = 0; k < 10; ++k) refs += "&a" + std::to_string(i - 1) + ";";
      return refs;
    }() + "\">\n";
  body += "]>\n<methodCall><methodName>&a9;</methodName></methodCall>\n";
  return body;
}

std::size_t resident_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  return 0;
}

TEST_F(CallGuardTest, EntityBombIsRefusedBeforeAnyExpansionAndKeepsNoMemory) {
  const std::string bomb = entity_bomb();
  ASSERT_LT(bomb.size(), 1100u);
  const std::size_t before = resident_kib();
  for (int i = 0; i < 10; ++i) {
    const Fault f = answer(bomb);
    EXPECT_EQ(f.code, kParseErrorCode) << f.message;
    EXPECT_EQ(f.message,
              "a <!DOCTYPE>: XML-RPC has no document type, and this server reads no DTD (nor any "
              "entity but the five of XML and character references)");
  }
  // Ten bombs kept ~1.2 GB before; now nothing grows past the noise.
  EXPECT_LT(resident_kib(), before + 16 * 1024);
}

TEST_F(CallGuardTest, BodiesThatAreNotCallsAreRefusedNamingWhy) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "not well-formed XML at line 1, column 1: no element found"},
      {"<methodCall><<<",
       "not well-formed XML at line 1, column 14: not well-formed (invalid token)"},
      {"<!DOCTYPE methodCall><methodCall/>",
       "a <!DOCTYPE>: XML-RPC has no document type, and this server reads no DTD (nor any entity "
       "but the five of XML and character references)"},
      {call_of("a", "<param><value>&lol;</value></param>"),
       "not well-formed XML at line 1, column 82: undefined entity"},
      {"<?xml version=\"1.0\"?><?php echo 1 ?><methodCall/>",
       "a processing instruction <?php?>: XML-RPC has none"},
      {"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><methodCall/>",
       "encoding 'ISO-8859-1': this server reads UTF-8 only"},
      {"<?xml version=\"1.1\"?><methodCall/>", "XML version '1.1': XML-RPC is XML 1.0"},
      {"<methodResponse><params/></methodResponse>",
       "the body is a <methodResponse>, not a <methodCall>"},
      {"<methodCall></methodCall>", "the <methodCall> has no <methodName>"},
      {"<methodCall><params/></methodCall>",
       "<params> inside <methodCall>, which holds a <methodName> and then one <params>"},
      {"<methodCall><methodName>a b</methodName></methodCall>",
       "<methodName> 'a b' is not a method's name (1 to 256 of A-Z a-z 0-9 _ . : /)"},
      {"<methodCall><methodName></methodName></methodCall>",
       "<methodName> '' is not a method's name (1 to 256 of A-Z a-z 0-9 _ . : /)"},
      {"<methodCall><methodName>a</methodName><params>x</params></methodCall>",
       "text 'x' inside <params>, which holds only <param>s"},
      {"<methodCall><methodName>a</methodName><params><param/></params></methodCall>",
       "params[0]: <param> has no <value>"},
      {"<methodCall><methodName>a</methodName></methodCall><methodCall/>",
       "not well-formed XML at line 1, column 52: junk after document element"},
      // XML allows these; XML-RPC's clients write UTF-8 without a byte order
      // mark (xmlrpc-c 1.33 reads no mark, and UTF-16 differently from expat).
      {std::string("\xff\xfe<\0m\0", 6),
       "the body starts with byte 0xff: an XML-RPC call starts with '<' (UTF-8, no byte order "
       "mark)"},
      {"\xef\xbb\xbf<methodCall><methodName>a</methodName></methodCall>",
       "the body starts with byte 0xef: an XML-RPC call starts with '<' (UTF-8, no byte order "
       "mark)"},
  };
  for (const auto& [body, message] : cases) {
    const Fault f = answer(body);
    EXPECT_EQ(f.code, kParseErrorCode) << escaped(body) << ": " << f.message;
    EXPECT_EQ(f.message, message) << escaped(body);
  }
  std::string deep = "<value><i4>1</i4></value>";
  for (unsigned i = 1; i < config_.manager.max_nesting; ++i)
    deep = "<value><array><data>" + deep + "</data></array></value>";
  // max_nesting values pass, to the registry (which has no probe.get here).
  EXPECT_EQ(answer(one_param(deep)).code, -506);
  const Fault too_deep =
      answer(one_param("<value><array><data>" + deep + "</data></array></value>"));
  EXPECT_EQ(too_deep.code, kParseErrorCode);
  EXPECT_EQ(too_deep.message.substr(too_deep.message.find(": ") + 2),
            "values nested deeper than manager.max_nesting (" +
                std::to_string(config_.manager.max_nesting) + ")");
}

// Calls as clients write them pass the check: xmlrpc-c's, in both of its
// dialects, and Python's xmlrpc.client (its output, verbatim).
TEST(CallGuard, PassesCallsAsXmlrpcCAndPythonWriteThem) {
  const CallGuard guard(16);
  auto passes = [&](const std::string& body) {
    auto checked = guard.check(body);
    if (auto* refusal = std::get_if<CallRefusal>(&checked)) return "refused: " + refusal->message;
    return std::get<CheckedCall>(checked).method;
  };
  xmlrpc_c::paramList params;
  params.add(xmlrpc_c::value_int(-2147483647 - 1));
  params.add(xmlrpc_c::value_i8(INT64_MIN));
  params.add(xmlrpc_c::value_i8(INT64_MAX));
  params.add(xmlrpc_c::value_boolean(true));
  params.add(xmlrpc_c::value_double(1.7976931348623157e308));
  params.add(xmlrpc_c::value_double(-2.2250738585072014e-308));
  params.add(xmlrpc_c::value_double(0.100074));
  params.add(xmlrpc_c::value_datetime(xmlrpc_datetime{2024, 2, 29, 23, 59, 59, 999999}));
  params.add(xmlrpc_c::value_bytestring(std::vector<unsigned char>{0, 1, 2, 250, 251}));
  params.add(xmlrpc_c::value_string("a<&>\"'\r\n\t\xc3\xa9\xef\xbf\xbd"));
  params.add(xmlrpc_c::value_nil());
  params.add(xmlrpc_c::value_array(
      xmlrpc_c::carray{xmlrpc_c::value_int(1), xmlrpc_c::value_array(xmlrpc_c::carray())}));
  params.add(xmlrpc_c::value_struct(
      {{"", xmlrpc_c::value_string("")}, {"from", xmlrpc_c::value_struct(xmlrpc_c::cstruct())}}));
  for (auto dialect : {xmlrpc_dialect_i8, xmlrpc_dialect_apache}) {
    std::string body;
    xmlrpc_c::xml::generateCall("query.latency", params, dialect, &body);
    EXPECT_EQ(passes(body), "query.latency") << body;
  }
  EXPECT_EQ(passes(R"(<?xml version='1.0'?>
<methodCall>
<methodName>query.latency</methodName>
<params>
<param>
<value><struct>
<member>
<name>from</name>
<value><dateTime.iso8601>20260203T12:00:00</dateTime.iso8601></value>
</member>
<member>
<name>limit</name>
<value><int>100</int></value>
</member>
<member>
<name>x</name>
<value><double>1e-07</double></value>
</member>
<member>
<name>y</name>
<value><double>1e+16</double></value>
</member>
<member>
<name>b</name>
<value><boolean>1</boolean></value>
</member>
<member>
<name>bin</name>
<value><base64>
eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4
eHh4
</base64></value>
</member>
<member>
<name>n</name>
<value><nil/></value></member>
<member>
<name>s</name>
<value><string>a&lt;&amp;&gt;&#233;</string></value>
</member>
</struct></value>
</param>
</params>
</methodCall>
)"),
            "query.latency");
  // What XML allows besides: comments, CDATA, character references, no
  // <params>, an empty <params/>, a string without <string>, empty values.
  EXPECT_EQ(passes("<methodCall><methodName>system.listMethods</methodName></methodCall>"),
            "system.listMethods");
  EXPECT_EQ(passes("<?xml version=\"1.0\" encoding=\"utf-8\"?><!-- c --><methodCall><methodName>"
                   "probe&#46;get</methodName><params/></methodCall><!-- c -->"),
            "probe.get");
  EXPECT_EQ(passes(one_param("<value><i4><![CDATA[12]]><!-- c --></i4></value>")), "probe.get");
  EXPECT_EQ(passes(one_param("<value></value>")), "probe.get");
  EXPECT_EQ(passes(one_param("<value>  plain text  </value>")), "probe.get");
  EXPECT_EQ(passes(one_param("<value>\n  <string></string>\n</value>")), "probe.get");
  EXPECT_EQ(passes(one_param("<value><double>+.5E-3</double></value>")), "probe.get");
  EXPECT_EQ(
      passes(one_param("<value><i8>-0000000000000000000000009223372036854775808</i8></value>")),
      "probe.get");
  EXPECT_EQ(passes(one_param("<value><dateTime.iso8601>00000101T00:00:00.5</dateTime.iso8601>"
                             "</value>")),
            "probe.get");
}

// The manager itself, over HTTP: a crash case for a direct method
// (query.*, parsed by xmlrpc-c's parseCall), one for the registry, without
// credentials; the manager answers both and goes on serving.
TEST(CallGuardServer, TheManagerAnswersCrashCasesWithFaultsAndKeepsServing) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  configure_xmlrpc_limits(config.manager);
  auto manager = start_manager_daemon(config);
  const auto port = manager->xmlrpc_port();
  auto body_of = [](const std::string& response) {
    auto at = response.find("\r\n\r\n");
    return at == std::string::npos ? response : response.substr(at + 4);
  };
  for (const std::string method : {"query.latency", "probe.list", "nope"}) {
    const std::string response = testing::post_xmlrpc(
        testing::dial_loopback(port), "",
        call_of(method, "<param><value><i8>9223372036854775808</i8></value></param>"));
    const Fault f = fault_of(body_of(response));
    EXPECT_EQ(f.code, kBadArgumentCode) << response;
    EXPECT_EQ(f.message,
              "params[0]: <i8> value '9223372036854775808' is not an integer in "
              "-9223372036854775808..9223372036854775807");
  }
  const std::string listed =
      testing::post_xmlrpc(testing::dial_loopback(port), "", call_of("system.listMethods", ""));
  EXPECT_NE(listed.find("<string>query.latency</string>"), std::string::npos) << listed;
  manager->stop();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace flexmon::manager
