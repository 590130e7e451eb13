// A config for manager tests: three nodes, an admin and a user, loopback
// ports chosen by the kernel, files under a fresh temporary folder.
#pragma once

#include <filesystem>
#include <random>
#include <string>

#include "common/config.h"

namespace flexmon::manager::testing {

inline std::filesystem::path temp_dir() {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() /
             ("flexmon-manager-test-" + std::to_string(rd()) + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir;
}

inline Config test_config(const std::filesystem::path& dir) {
  const std::string text = R"(
manager:
  xmlrpc_listen: 127.0.0.1:1
  control_listen: 127.0.0.1:2
  state_db: manager.db
  max_request_bytes: 65536
collector:
  cache_db: cache.db
limits:
  max_paths_per_request: 6
nodes:
  - {id: n1, site: a, address: 127.0.0.1, key: 000102030405060708090a0b0c0d0e0f}
  - {id: n2, site: a, address: 127.0.0.2, key: 101112131415161718191a1b1c1d1e1f}
  - {id: n3, site: b, address: 127.0.0.3, responder_port: 9000, key: 202122232425262728292a2b2c2d2e2f}
users:
  - {name: alice, token: alice-token-0123456789, role: admin}
  - {name: bob, token: bob-token-0123456789, role: user}
)";
  Config config = parse_config(text, "test.yaml", dir);
  // Ephemeral ports (the config file itself cannot say 0).
  config.manager.xmlrpc.port = 0;
  config.manager.control.port = 0;
  return config;
}

}  // namespace flexmon::manager::testing
