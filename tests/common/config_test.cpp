#include "common/config.h"

#include <fmt/format.h>

#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace flexmon {
namespace {

const char* kKey = "000102030405060708090a0b0c0d0e0f";

std::string minimal(const std::string& extra = "") {
  return std::string("nodes:\n  - id: n1\n    site: s\n    address: 127.0.0.1\n    key: ") + kKey +
         "\nusers:\n  - name: demo\n    token_hash: "
         "\"hmac-sha256:22:00112233445566778899aabbccddeeff:" +
         std::string(64, 'a') + "\"\n" + extra;
}

// Returns the message of the ConfigError that parsing `text` throws.
std::string error_of(const std::string& text) {
  try {
    parse_config(text, "test.yaml", "/base");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(Config, ExampleFileLoads) {
  Config config = load_config(FLEXMON_EXAMPLE_CONFIG);
  ASSERT_EQ(config.nodes.size(), 2u);
  EXPECT_EQ(config.nodes[1].responder_port, 9473);
  EXPECT_EQ(config.responder_port(config.nodes[0]), 8473);
  EXPECT_EQ(config.nodes[0].key.size(), 32u);
  EXPECT_EQ(config.find_user("alice")->role, Role::admin);
  EXPECT_EQ(config.manager.state_db, "/var/lib/flexmon/manager.db");
}

TEST(Config, DefaultsAndRelativePaths) {
  Config config = parse_config(minimal("data_dir: data\n"), "test.yaml", "/base");
  EXPECT_EQ(config.data_dir, "/base/data");
  EXPECT_EQ(config.collector.cache_db, "/base/data/cache.db");
  EXPECT_EQ(config.manager.xmlrpc.port, 8470);
  EXPECT_EQ(config.manager_for_probers().port, 8471);
  ASSERT_EQ(config.collectors_for_probers().size(), 1u);
  EXPECT_EQ(config.collectors_for_probers()[0].port, 8472);
  EXPECT_EQ(config.find_user("demo")->role, Role::user);
}

TEST(Config, UnknownKeyNamesKeyFileAndLine) {
  EXPECT_EQ(error_of(minimal("manager:\n  xmlrpc_listen: 127.0.0.1:1\n  colour: blue\n")),
            "test.yaml:11: manager.colour: unknown key");
  EXPECT_EQ(error_of(minimal("colector: {}\n")), "test.yaml:9: colector: unknown key");
}

TEST(Config, UnknownKeyInListItem) {
  std::string text = minimal();
  text.insert(text.find("    key:"), "    sight: x\n");
  EXPECT_EQ(error_of(text), "test.yaml:5: nodes[0].sight: unknown key");
}

TEST(Config, MissingRequiredKey) {
  EXPECT_EQ(
      error_of("nodes:\n  - id: n1\n    site: s\n    key: 00112233445566778899aabbccddeeff\n"),
      "test.yaml:2: nodes[0].address: required key is missing");
}

TEST(Config, WrongTypes) {
  EXPECT_EQ(error_of(minimal("manager:\n  max_connections: many\n")),
            "test.yaml:10: manager.max_connections: expected an integer, got 'many'");
  EXPECT_EQ(error_of(minimal("manager:\n  max_connections: -1\n")),
            "test.yaml:10: manager.max_connections: expected an integer, got '-1'");
  EXPECT_EQ(error_of(minimal("manager: [1, 2]\n")), "test.yaml:9: manager: expected a mapping");
  EXPECT_EQ(error_of(minimal("prober:\n  heartbeat_s: [1]\n")),
            "test.yaml:10: prober.heartbeat_s: expected a number");
  EXPECT_EQ(error_of(minimal("prober:\n  responder_port: 70000\n")),
            "test.yaml:10: prober.responder_port: 70000 is out of range (0..65535)");
  EXPECT_EQ(error_of(minimal("collector:\n  listen: localhost\n")),
            "test.yaml:10: collector.listen: expected HOST:PORT, got 'localhost'");
}

TEST(Config, DuplicateKey) {
  EXPECT_EQ(error_of(minimal("users:\n  - name: x\n")), "test.yaml:9: users: duplicate key");
}

TEST(Config, BadValues) {
  std::string bad_key = minimal();
  bad_key.replace(bad_key.find(kKey), 32, "zz0102030405060708090a0b0c0d0e0f");
  EXPECT_EQ(error_of(bad_key), "test.yaml:5: nodes[0].key: not a hex digit pair: 'zz'");
  std::string short_token = minimal();
  short_token.replace(short_token.find(":22:"), 4, ":16:");
  EXPECT_EQ(error_of(short_token),
            "test.yaml:8: users[0].token_hash: the token is 16 characters; tokens must be 22 to "
            "256 characters (at least 128 random bits): `flexmon-manager hash-token --generate` "
            "makes one");
  EXPECT_EQ(error_of(minimal("limits:\n  latency:\n    min_size: 2000\n")),
            "test.yaml:11: limits.latency.min_size: above max_size");
  EXPECT_EQ(error_of(minimal("prober:\n  heartbeat_s: 0\n")),
            "test.yaml:10: prober.heartbeat_s: must be between 0.1 and 3600, got 0");
  // 0 would be a read timeout of "never" on the sockets.
  EXPECT_EQ(error_of(minimal("manager:\n  http_timeout_s: 0\n")),
            "test.yaml:10: manager.http_timeout_s: must be between 1 and 3600, got 0");
  EXPECT_EQ(error_of(minimal("manager:\n  rendered_rows_mb: 70000\n")),
            "test.yaml:10: manager.rendered_rows_mb: must be between 0 and 65536, got 70000");
  // The collector writes its WAL file full to this size at start.
  EXPECT_EQ(error_of(minimal("collector:\n  max_wal_mb: 0\n")),
            "test.yaml:10: collector.max_wal_mb: must be between 1 and 65536, got 0");
  EXPECT_EQ(error_of(minimal("collector:\n  max_wal_mb: 70000\n")),
            "test.yaml:10: collector.max_wal_mb: must be between 1 and 65536, got 70000");
}

// Values that passed --check-config and then broke the daemons: 1e308 s
// overflowed the conversion to int64 ns (the manager closed every prober
// session at once), a heartbeat of 1e-300 s spun a prober on a core, a
// nesting limit of 0 refused every call.
TEST(Config, ValuesThatBrokeTheDaemonsAreRefused) {
  EXPECT_EQ(error_of(minimal("manager:\n  dead_after_s: 1e308\n")),
            "test.yaml:10: manager.dead_after_s: must be between 1 and 604800, got 1e+308");
  EXPECT_EQ(error_of(minimal("prober:\n  heartbeat_s: 1e308\n")),
            "test.yaml:10: prober.heartbeat_s: must be between 0.1 and 3600, got 1e+308");
  EXPECT_EQ(error_of(minimal("prober:\n  heartbeat_s: 1e-300\n")),
            "test.yaml:10: prober.heartbeat_s: must be between 0.1 and 3600, got 1e-300");
  EXPECT_EQ(error_of(minimal("manager:\n  max_nesting: 0\n")),
            "test.yaml:10: manager.max_nesting: must be between 8 and 64, got 0");
  EXPECT_EQ(error_of(minimal("limits:\n  roles:\n    user:\n      min_interval_s: 1e-300\n")),
            "test.yaml:12: limits.roles.user.min_interval_s: must be between 0.01 and 31536000, "
            "got 1e-300");
  EXPECT_EQ(
      error_of(minimal("budgets:\n  users:\n    - {name: demo, bps: 1e300}\n")),
      "test.yaml:11: budgets.users[0].bps: must be between 0 and 1000000000000000, got 1e+300");
}

// The bounds of every numeric key as schemas/config.md states them
// ("| `KEY` | int, MIN–MAX |", with "KEY / `OTHER`" for a pair of keys).
struct DocumentedBound {
  std::string key;  // manager.dead_after_s
  bool integer;
  double min, max;
};

std::vector<DocumentedBound> documented_bounds() {
  std::ifstream in(FLEXMON_CONFIG_REFERENCE);
  std::stringstream text;
  text << in.rdbuf();
  const std::string page = text.str();
  const std::regex row(
      R"(\| `([a-z_.]+)`(?: / `([a-z_]+)`)? \| (int|number), ([0-9.e]+)–([0-9.e]+) \|)");
  std::vector<DocumentedBound> bounds;
  for (std::sregex_iterator it(page.begin(), page.end(), row), end; it != end; ++it) {
    const auto& m = *it;
    DocumentedBound b{m[1], m[3] == "int", std::stod(m[4]), std::stod(m[5])};
    bounds.push_back(b);
    if (m[2].matched) {
      b.key = b.key.substr(0, b.key.rfind('.') + 1) + std::string(m[2]);
      bounds.push_back(b);
    }
  }
  return bounds;
}

// "a.b.c" = value as nested YAML mappings.
std::string nested_yaml(const std::string& key, const std::string& value) {
  std::string yaml, indent;
  std::size_t from = 0;
  for (std::size_t dot; (dot = key.find('.', from)) != std::string::npos; from = dot + 1) {
    yaml += indent + key.substr(from, dot - from) + ":\n";
    indent += "  ";
  }
  return yaml + indent + key.substr(from) + ": " + value + "\n";
}

// Doc and loader cannot drift: each documented bound is enforced, and the
// refusal states the documented bounds.
TEST(Config, EveryDocumentedBoundIsEnforced) {
  const auto bounds = documented_bounds();
  ASSERT_GE(bounds.size(), 40u) << "schemas/config.md lost its bounds";
  const std::regex stated(R"(must be between ([-0-9.e+]+) and ([-0-9.e+]+), got)");
  for (const auto& b : bounds) {
    std::vector<std::string> outside;
    auto text = [&b](double v) {
      return b.integer ? fmt::format("{:.0f}", v) : fmt::format("{}", v);
    };
    if (b.min > 0) outside.push_back(text(b.integer ? b.min - 1 : b.min / 2));
    if (b.min == 0 && !b.integer) outside.push_back("-1");
    outside.push_back(text(b.integer ? b.max + 1 : b.max * 2));
    for (const auto& value : outside) {
      const std::string error = error_of(minimal(nested_yaml(b.key, value)));
      EXPECT_NE(error.find(b.key + ":"), std::string::npos)
          << b.key << " = " << value << ": " << error;
      std::smatch m;
      if (std::regex_search(error, m, stated)) {
        EXPECT_EQ(std::stod(m[1]), b.min) << error;
        EXPECT_EQ(std::stod(m[2]), b.max) << error;
      }
    }
  }
}

TEST(Config, DuplicateNode) {
  std::string text = minimal();
  std::string node = text.substr(7, text.find("users:") - 7);
  text.insert(text.find("users:"), node);
  EXPECT_EQ(error_of(text), "test.yaml:6: nodes[1].id: duplicate node id 'n1'");
}

TEST(Config, NotYaml) {
  EXPECT_NE(error_of("nodes: [\n").find("test.yaml:"), std::string::npos);
  EXPECT_NE(error_of("nodes: [\n").find("not valid YAML"), std::string::npos);
  EXPECT_EQ(error_of("- a\n- b\n"), "test.yaml:1: expected a mapping at the top");
}

TEST(Config, MissingFile) { EXPECT_THROW(load_config("/nonexistent/flexmon.yaml"), ConfigError); }

}  // namespace
}  // namespace flexmon
