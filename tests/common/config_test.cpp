#include "common/config.h"

#include <gtest/gtest.h>

#include <string>

namespace flexmon {
namespace {

const char* kKey = "000102030405060708090a0b0c0d0e0f";

std::string minimal(const std::string& extra = "") {
  return std::string("nodes:\n  - id: n1\n    site: s\n    address: 127.0.0.1\n    key: ") + kKey +
         "\nusers:\n  - name: demo\n    token: 0123456789abcdef\n" + extra;
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
  short_token.replace(short_token.find("0123456789abcdef"), 16, "short");
  EXPECT_EQ(error_of(short_token), "test.yaml:8: users[0].token: must be 16 to 256 characters");
  EXPECT_EQ(error_of(minimal("limits:\n  latency:\n    min_size: 2000\n")),
            "test.yaml:11: limits.latency.min_size: above max_size");
  EXPECT_EQ(error_of(minimal("prober:\n  heartbeat_s: 0\n")),
            "test.yaml:10: prober.heartbeat_s: must be positive");
  // 0 would be a read timeout of "never" on the sockets.
  EXPECT_EQ(error_of(minimal("manager:\n  http_timeout_s: 0\n")),
            "test.yaml:10: manager.http_timeout_s: must be at least 1");
  EXPECT_EQ(error_of(minimal("manager:\n  rendered_rows_mb: 70000\n")),
            "test.yaml:10: manager.rendered_rows_mb: must be at most 65536");
  // The collector writes its WAL file full to this size at start.
  EXPECT_EQ(error_of(minimal("collector:\n  max_wal_mb: 0\n")),
            "test.yaml:10: collector.max_wal_mb: must be between 1 and 65536");
  EXPECT_EQ(error_of(minimal("collector:\n  max_wal_mb: 70000\n")),
            "test.yaml:10: collector.max_wal_mb: must be between 1 and 65536");
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
