// Roles: every method api_methods() returns, called by every role, is
// allowed or refused exactly as the table in schemas/xmlrpc-api.md
// ("Roles") says, so the document and the code cannot drift; and the same
// over HTTP through the real manager, for a call alone and inside
// system.multicall.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "manager/api.h"
#include "manager/call_handler.h"
#include "manager/fault_codes.h"
#include "manager/manager.h"
#include "manager/query.h"
#include "manager/request_book.h"
#include "manager/store.h"
#include "tests/manager/http_post.h"
#include "tests/manager/test_config.h"

namespace flexmon::manager {
namespace {

constexpr Role kRoles[] = {Role::reader, Role::user, Role::service, Role::admin};

// The "Roles" table of schemas/xmlrpc-api.md: method -> the roles that may
// call it. Fails the test when the section or a row is malformed.
std::map<std::string, std::set<Role>> documented_roles() {
  std::ifstream in(FLEXMON_API_DOC);
  EXPECT_TRUE(in) << FLEXMON_API_DOC;
  std::map<std::string, std::set<Role>> table;
  std::string line;
  bool in_section = false, header_seen = false;
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) {
      in_section = line == "## Roles";
      continue;
    }
    if (!in_section || line.rfind("|", 0) != 0) continue;
    std::vector<std::string> cells;
    std::stringstream row(line.substr(1));
    for (std::string cell; std::getline(row, cell, '|');) {
      cell.erase(0, cell.find_first_not_of(' '));
      cell.erase(cell.find_last_not_of(' ') + 1);
      cells.push_back(cell);
    }
    if (!header_seen) {
      EXPECT_EQ(cells, (std::vector<std::string>{"method", "reader", "user", "service", "admin"}))
          << line;
      header_seen = true;
      continue;
    }
    if (cells[0].rfind("---", 0) == 0) continue;
    EXPECT_EQ(cells.size(), 5u) << line;
    EXPECT_TRUE(cells[0].size() > 2 && cells[0].front() == '`' && cells[0].back() == '`') << line;
    if (cells.size() != 5 || cells[0].size() <= 2) continue;
    std::string method = cells[0].substr(1, cells[0].size() - 2);
    auto& allowed = table[method];
    for (std::size_t i = 0; i < 4; ++i) {
      EXPECT_TRUE(cells[i + 1] == "yes" || cells[i + 1] == "no") << line;
      if (cells[i + 1] == "yes") allowed.insert(kRoles[i]);
    }
  }
  EXPECT_FALSE(table.empty()) << "no Roles table in " << FLEXMON_API_DOC;
  return table;
}

class Roles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir();
    config_ = testing::test_config(dir_);
    book_ = std::make_unique<RequestBook>(config_,
                                          std::make_unique<RequestStore>(config_.manager.state_db));
    queries_ = std::make_unique<QueryService>(config_);
    methods_ = api_methods(config_, *book_, book_->fleet(), *queries_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The test config's user of `role`.
  const UserConfig& caller(Role role) const {
    for (const auto& u : config_.users)
      if (u.role == role) return u;
    throw std::logic_error("the test config has no user of that role");
  }

  std::filesystem::path dir_;
  Config config_;
  std::unique_ptr<RequestBook> book_;
  std::unique_ptr<QueryService> queries_;
  std::vector<ApiMethod> methods_;
};

// The role fault `call` raised, or nullopt when it got past the role check
// (an answer, or any other fault: no arguments are given, so most methods
// refuse them).
template <typename Call>
std::optional<std::string> role_fault(Call call) {
  try {
    call();
  } catch (const ApiFault& f) {
    if (f.code() == kNotPermitted &&
        std::string(f.what()).find("not permitted for role") != std::string::npos)
      return std::string(f.what());
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

TEST_F(Roles, EveryMethodAndRoleAsTheApiDocumentSays) {
  const auto table = documented_roles();
  std::set<std::string> implemented, documented;
  for (const auto& [name, roles] : table) documented.insert(name);
  for (const auto& m : methods_) implemented.insert(m.name);
  EXPECT_EQ(implemented, documented)
      << "api_methods() and the Roles table of " << FLEXMON_API_DOC << " name different methods";

  const xmlrpc_c::paramList none;
  for (const auto& m : methods_) {
    auto row = table.find(m.name);
    if (row == table.end()) continue;
    std::vector<Role> allowed(row->second.begin(), row->second.end());
    std::sort(allowed.begin(), allowed.end());
    std::vector<Role> declared = m.roles;
    std::sort(declared.begin(), declared.end());
    EXPECT_EQ(declared, allowed) << m.name;
    for (Role role : kRoles) {
      const UserConfig& who = caller(role);
      const bool may = row->second.count(role) != 0;
      SCOPED_TRACE(m.name + " by role " + role_name(role));
      // Through run, or write for the methods that write their answer.
      auto by_run = role_fault([&] {
        XmlAnswer out;
        if (m.write)
          m.write(who, none, out);
        else
          m.run(who, none);
      });
      if (may) {
        EXPECT_FALSE(by_run) << *by_run;
      } else {
        ASSERT_TRUE(by_run);
        // The order of m.roles is the order the table lists the roles in.
        EXPECT_EQ(*by_run, role_refusal(m.name, role, m.roles));
        EXPECT_NE(by_run->find(m.name), std::string::npos);
        for (Role r : row->second) EXPECT_NE(by_run->find(role_name(r)), std::string::npos);
      }
      if (m.write) {
        XmlAnswer out;
        auto by_write = role_fault([&] { m.write(who, none, out); });
        EXPECT_EQ(by_write.has_value(), !may);
      }
    }
  }
}

TEST_F(Roles, RefusalComesBeforeTheArguments) {
  // A reader's probe.request with a valid spec is refused for the role, not
  // admitted; with a bad one, refused for the role, not for the spec.
  const ApiMethod* request = nullptr;
  for (const auto& m : methods_)
    if (m.name == "probe.request") request = &m;
  ASSERT_NE(request, nullptr);
  xmlrpc_c::paramList good;
  good.add(xmlrpc_c::value_struct(
      {{"tool", xmlrpc_c::value_string("latency")},
       {"interval", xmlrpc_c::value_double(5)},
       {"nodes",
        xmlrpc_c::value_array({xmlrpc_c::value_string("n1"), xmlrpc_c::value_string("n2")})}}));
  xmlrpc_c::paramList bad;
  bad.add(xmlrpc_c::value_int(1));
  for (const auto* params : {&good, &bad})
    EXPECT_TRUE(role_fault([&] { request->run(caller(Role::reader), *params); }));
  EXPECT_TRUE(book_->list(std::nullopt).empty());
  request->run(caller(Role::service), good);
  EXPECT_EQ(book_->list(std::nullopt).size(), 1u);
}

TEST_F(Roles, HelpSaysWhoMayCall) {
  for (const auto& m : methods_) {
    EXPECT_FALSE(m.roles.empty()) << m.name;
    EXPECT_NE(m.help.find("Roles: "), std::string::npos) << m.name;
  }
}

std::string method_call(const std::string& method, const std::string& params = "") {
  return "<?xml version=\"1.0\"?><methodCall><methodName>" + method + "</methodName><params>" +
         params + "</params></methodCall>";
}

const std::string kLatencyMesh =
    "<param><value><struct>"
    "<member><name>tool</name><value><string>latency</string></value></member>"
    "<member><name>interval</name><value><double>5</double></value></member>"
    "<member><name>nodes</name><value><array><data>"
    "<value><string>n1</string></value><value><string>n2</string></value>"
    "</data></array></value></member></struct></value></param>";

// The real manager over HTTP: the registry's path (probe.*), the direct
// writers' (query.*), and system.multicall, which calls methods from inside.
TEST(RolesOverHttp, EnforcedOnEveryPathIntoTheManager) {
  auto dir = testing::temp_dir();
  Config config = testing::test_config(dir);
  configure_xmlrpc_limits(config.manager);
  auto manager = start_manager_daemon(config);
  const auto port = manager->xmlrpc_port();
  auto call = [port](const std::string& auth, const std::string& body) {
    return testing::post_xmlrpc(testing::dial_loopback(port), auth, body);
  };
  const std::string refused = "not permitted for role reader";

  auto reader_request = call(testing::kCarolAuth, method_call("probe.request", kLatencyMesh));
  EXPECT_NE(reader_request.find("<i4>4030</i4>"), std::string::npos) << reader_request;
  EXPECT_NE(reader_request.find("probe.request: " + refused +
                                " (roles that may call it: user, service, admin)"),
            std::string::npos)
      << reader_request;
  auto reader_query = call(testing::kCarolAuth, method_call("query.paths"));
  EXPECT_EQ(reader_query.find("faultCode"), std::string::npos) << reader_query;
  auto reader_nodes = call(testing::kCarolAuth, method_call("node.list"));
  EXPECT_NE(reader_nodes.find("<string>n3</string>"), std::string::npos) << reader_nodes;

  const std::string multicall =
      method_call("system.multicall",
                  "<param><value><array><data>"
                  "<value><struct><member><name>methodName</name><value><string>probe.list"
                  "</string></value></member><member><name>params</name><value><array><data/>"
                  "</array></value></member></struct></value>"
                  "<value><struct><member><name>methodName</name><value><string>node.list"
                  "</string></value></member><member><name>params</name><value><array><data/>"
                  "</array></value></member></struct></value>"
                  "</data></array></value></param>");
  auto reader_multi = call(testing::kCarolAuth, multicall);
  EXPECT_NE(reader_multi.find("probe.list: " + refused), std::string::npos) << reader_multi;
  EXPECT_NE(reader_multi.find("<string>n3</string>"), std::string::npos) << reader_multi;

  // A service asks like a user and sees only its own requests.
  auto service_request = call(testing::kSvcAuth, method_call("probe.request", kLatencyMesh));
  EXPECT_NE(service_request.find("<string>r1</string>"), std::string::npos) << service_request;
  auto bob_request = call(testing::kBobAuth, method_call("probe.request", kLatencyMesh));
  EXPECT_NE(bob_request.find("<string>r2</string>"), std::string::npos) << bob_request;
  auto service_list = call(testing::kSvcAuth, method_call("probe.list"));
  EXPECT_NE(service_list.find("<string>r1</string>"), std::string::npos) << service_list;
  EXPECT_EQ(service_list.find("<string>r2</string>"), std::string::npos) << service_list;
  auto service_get_other =
      call(testing::kSvcAuth,
           method_call("probe.get", "<param><value><string>r2</string></value></param>"));
  EXPECT_NE(service_get_other.find("belongs to another user"), std::string::npos)
      << service_get_other;
  auto admin_list = call(testing::kAliceAuth, method_call("probe.list"));
  EXPECT_NE(admin_list.find("<string>r2</string>"), std::string::npos) << admin_list;

  // Introspection needs no credentials and shows the roles.
  auto help = call("", method_call("system.methodHelp",
                                   "<param><value><string>query.paths</string></value></param>"));
  EXPECT_NE(help.find("Roles: reader, user, service, admin."), std::string::npos) << help;
  manager->stop();
  manager->wait();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace flexmon::manager
