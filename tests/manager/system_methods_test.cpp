// The system.* methods of the running manager: no fault with code 0 (what
// xmlrpc-c's system.shutdown answered), system.shutdown refused with 4030
// alone and inside system.multicall, and system.multicall answering each
// call as that call alone would be answered.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include <xmlrpc-c/base.hpp>
#include <xmlrpc-c/xml.hpp>

#include "manager/call_handler.h"
#include "manager/manager.h"
#include "tests/manager/http_post.h"
#include "tests/manager/test_config.h"

namespace flexmon::manager {
namespace {

using testing::kAliceAuth;

// The fault codes schemas/xmlrpc-api.md lists.
const std::set<int> kDocumentedCodes = {-32700, -501, -502, -506, 4001, 4002, 4010,
                                        4030,   4040, 4290, 4291, 5000, 5030};

class SystemMethodsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir();
    config_ = testing::test_config(dir_);
    // The manager's request limit is xmlrpc-c's process-wide XML limit, also
    // for this test's reading of answers: 100 calls' answers exceed 64 KiB.
    config_.manager.max_request_bytes = 1 << 20;
    configure_xmlrpc_limits(config_.manager);
    manager_ = start_manager_daemon(config_);
  }
  void TearDown() override {
    manager_->stop();
    std::filesystem::remove_all(dir_);
  }

  xmlrpc_c::rpcOutcome call(const std::string& method, const xmlrpc_c::paramList& params,
                            const std::string& auth = kAliceAuth) {
    std::string body;
    xmlrpc_c::xml::generateCall(method, params, &body);
    const std::string response =
        testing::post_xmlrpc(testing::dial_loopback(manager_->xmlrpc_port()), auth, body);
    xmlrpc_c::rpcOutcome outcome;
    xmlrpc_c::xml::parseResponse(response.substr(response.find("\r\n\r\n") + 4), &outcome);
    return outcome;
  }

  std::filesystem::path dir_;
  Config config_;
  std::unique_ptr<ManagerDaemon> manager_;
};

int code_of(const xmlrpc_c::rpcOutcome& outcome) {
  return outcome.succeeded() ? 1 : static_cast<int>(outcome.getFault().getCode());
}

xmlrpc_c::paramList params_of(std::vector<xmlrpc_c::value> values) {
  xmlrpc_c::paramList p;
  for (auto& v : values) p.add(v);
  return p;
}

xmlrpc_c::value one_call(const std::string& method, std::vector<xmlrpc_c::value> params) {
  return xmlrpc_c::value_struct(
      {{"methodName", xmlrpc_c::value_string(method)}, {"params", xmlrpc_c::value_array(params)}});
}

TEST_F(SystemMethodsTest, ShutdownIsRefusedWith4030AloneAndInAMulticall) {
  for (const auto& params : {params_of({}), params_of({xmlrpc_c::value_string("now")})}) {
    for (const std::string& auth : {std::string(), kAliceAuth}) {
      const auto outcome = call("system.shutdown", params, auth);
      ASSERT_FALSE(outcome.succeeded());
      EXPECT_EQ(code_of(outcome), 4030);
      EXPECT_EQ(outcome.getFault().getDescription(),
                "system.shutdown: not permitted: the manager stops on SIGTERM (systemctl stop), "
                "not over XML-RPC");
    }
  }
  const auto multi =
      call("system.multicall", params_of({xmlrpc_c::value_array(xmlrpc_c::carray{one_call(
                                   "system.shutdown", {xmlrpc_c::value_string("now")})})}));
  ASSERT_TRUE(multi.succeeded());
  const auto results = xmlrpc_c::value_array(multi.getResult()).vectorValueValue();
  ASSERT_EQ(results.size(), 1u);
  const auto fault = xmlrpc_c::value_struct(results[0]).cvalue();
  EXPECT_EQ(static_cast<int>(xmlrpc_c::value_int(fault.at("faultCode"))), 4030);
  // Still serving.
  EXPECT_TRUE(call("probe.list", params_of({})).succeeded());
}

// Every system.* method, with good and bad arguments, alone and inside a
// multicall: no answer is a fault with code 0, every code is documented.
TEST_F(SystemMethodsTest, NoSystemMethodAnswersAnUndocumentedFaultCode) {
  const std::vector<std::string> methods = {
      "system.listMethods",     "system.methodExist",  "system.methodHelp",
      "system.methodSignature", "system.capabilities", "system.getCapabilities",
      "system.shutdown",        "system.multicall",    "system.nope"};
  const std::vector<std::vector<xmlrpc_c::value>> argument_lists = {
      {},
      {xmlrpc_c::value_string("probe.list")},
      {xmlrpc_c::value_string("no.such")},
      {xmlrpc_c::value_int(1)},
      {xmlrpc_c::value_string("a"), xmlrpc_c::value_string("b")},
      {xmlrpc_c::value_array(xmlrpc_c::carray())},
      {xmlrpc_c::value_array(xmlrpc_c::carray{xmlrpc_c::value_int(1)})},
  };
  std::vector<xmlrpc_c::value> all;
  for (const auto& method : methods)
    for (const auto& args : argument_lists) {
      const auto outcome = call(method, params_of(args));
      const int code = code_of(outcome);
      if (code != 1) {
        EXPECT_TRUE(kDocumentedCodes.contains(code))
            << method << " (" << args.size() << " arguments): code " << code << ": "
            << outcome.getFault().getDescription();
      }
      all.push_back(one_call(method, args));
    }
  const auto multi = call("system.multicall", params_of({xmlrpc_c::value_array(all)}));
  ASSERT_TRUE(multi.succeeded());
  const auto results = xmlrpc_c::value_array(multi.getResult()).vectorValueValue();
  ASSERT_EQ(results.size(), all.size());
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (results[i].type() != xmlrpc_c::value::TYPE_STRUCT) continue;
    const auto fault = xmlrpc_c::value_struct(results[i]).cvalue();
    const int code = xmlrpc_c::value_int(fault.at("faultCode"));
    EXPECT_TRUE(kDocumentedCodes.contains(code))
        << "calls[" << i << "]: code " << code << ": "
        << xmlrpc_c::value_string(fault.at("faultString")).cvalue();
  }
}

TEST_F(SystemMethodsTest, MulticallAnswersEachCallAsThatCallAlone) {
  const std::vector<xmlrpc_c::value> calls = {
      one_call("probe.list", {}),
      one_call("node.list", {}),
      one_call("probe.get", {xmlrpc_c::value_string("r9")}),
      one_call("query.paths", {}),
      one_call("query.latency", {xmlrpc_c::value_struct({{"limit", xmlrpc_c::value_int(0)}})}),
      one_call("system.methodHelp", {xmlrpc_c::value_string("probe.list")}),
      one_call("no.such", {}),
  };
  for (const std::string& auth : {kAliceAuth, std::string()}) {
    const auto multi = call("system.multicall", params_of({xmlrpc_c::value_array(calls)}), auth);
    ASSERT_TRUE(multi.succeeded());
    const auto results = xmlrpc_c::value_array(multi.getResult()).vectorValueValue();
    ASSERT_EQ(results.size(), calls.size());
    for (std::size_t i = 0; i < calls.size(); ++i) {
      const auto c = xmlrpc_c::value_struct(calls[i]).cvalue();
      xmlrpc_c::paramList p;
      for (const auto& v : xmlrpc_c::value_array(c.at("params")).vectorValueValue()) p.add(v);
      const auto alone = call(xmlrpc_c::value_string(c.at("methodName")).cvalue(), p, auth);
      if (alone.succeeded()) {
        ASSERT_EQ(results[i].type(), xmlrpc_c::value::TYPE_ARRAY) << i;
        const auto wrapped = xmlrpc_c::value_array(results[i]).vectorValueValue();
        ASSERT_EQ(wrapped.size(), 1u);
        std::string a, b;
        xmlrpc_c::xml::generateResponse(xmlrpc_c::rpcOutcome(wrapped[0]), &a);
        xmlrpc_c::xml::generateResponse(xmlrpc_c::rpcOutcome(alone.getResult()), &b);
        EXPECT_EQ(a, b) << "calls[" << i << "]";
      } else {
        ASSERT_EQ(results[i].type(), xmlrpc_c::value::TYPE_STRUCT) << i;
        const auto fault = xmlrpc_c::value_struct(results[i]).cvalue();
        EXPECT_EQ(static_cast<int>(xmlrpc_c::value_int(fault.at("faultCode"))), code_of(alone))
            << "calls[" << i << "]";
        EXPECT_EQ(xmlrpc_c::value_string(fault.at("faultString")).cvalue(),
                  alone.getFault().getDescription());
      }
    }
  }
  // Malformed calls of a multicall get their own faults.
  const auto bad = call("system.multicall",
                        params_of({xmlrpc_c::value_array(xmlrpc_c::carray{
                            xmlrpc_c::value_int(1), one_call("system.multicall", {}),
                            xmlrpc_c::value_struct({{"methodName", xmlrpc_c::value_int(1)}})})}));
  ASSERT_TRUE(bad.succeeded());
  const auto results = xmlrpc_c::value_array(bad.getResult()).vectorValueValue();
  const std::vector<std::string> messages = {
      "system.multicall: calls[0]: expected a struct {methodName, params}",
      "system.multicall: calls[1]: system.multicall cannot call system.multicall",
      "system.multicall: calls[2]: expected a struct of methodName (a string) and params (an "
      "array)"};
  ASSERT_EQ(results.size(), messages.size());
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto fault = xmlrpc_c::value_struct(results[i]).cvalue();
    EXPECT_EQ(static_cast<int>(xmlrpc_c::value_int(fault.at("faultCode"))), 4001);
    EXPECT_EQ(xmlrpc_c::value_string(fault.at("faultString")).cvalue(), messages[i]);
  }
  const auto not_array = call("system.multicall", params_of({xmlrpc_c::value_string("x")}));
  EXPECT_EQ(code_of(not_array), 4001);
  // At most 100 calls in one: introspection needs no credentials, so one
  // body must not make the manager answer thousands of them.
  const xmlrpc_c::carray many(101, one_call("system.listMethods", {}));
  const auto too_many = call("system.multicall", params_of({xmlrpc_c::value_array(many)}));
  EXPECT_EQ(code_of(too_many), 4001);
  EXPECT_EQ(too_many.getFault().getDescription(),
            "system.multicall: 101 calls, at most 100 in one");
  const xmlrpc_c::carray hundred(100, one_call("system.listMethods", {}));
  EXPECT_TRUE(call("system.multicall", params_of({xmlrpc_c::value_array(hundred)})).succeeded());
}

}  // namespace
}  // namespace flexmon::manager
