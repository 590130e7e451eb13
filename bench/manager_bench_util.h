// Shared by the manager benchmarks: a config of N nodes on loopback, and
// percentiles.
#pragma once

#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/config.h"
#include "manager/auth.h"

namespace flexmon::bench {

inline std::filesystem::path temp_dir(const std::string& name) {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() / fmt::format("{}-{}", name, rd());
  std::filesystem::create_directories(dir);
  return dir;
}

inline Config config_with_nodes(const std::filesystem::path& dir, int nodes) {
  std::string text =
      "manager:\n  xmlrpc_listen: 127.0.0.1:1\n  control_listen: 127.0.0.1:2\n"
      "  max_connections: 64\n"
      "limits:\n  max_requests_per_user: 100000\n  max_paths_per_user: 10000000\n"
      "nodes:\n";
  for (int i = 1; i <= nodes; ++i)
    text += fmt::format("  - {{id: n{}, site: s{}, address: 10.{}.{}.{}, key: {:032x}}}\n", i,
                        i % 10, i / 65536 % 256, i / 256 % 256, i % 256, i + 1);
  // Tokens alice-token-0123456789abcdef, bob-token-0123456789abcdef and
  // user-token-N (N: 16 digits); the config holds their hashes.
  auto user = [](const std::string& name, const std::string& token, const char* role) {
    return fmt::format("  - {{name: {}, token_hash: \"{}\", role: {}}}\n", name,
                       format_token_hash(manager::make_token_hash(token)), role);
  };
  text += "users:\n" + user("alice", "alice-token-0123456789abcdef", "admin") +
          user("bob", "bob-token-0123456789abcdef", "user");
  for (int u = 0; u < 64; ++u)
    text += user(fmt::format("u{}", u), fmt::format("user-token-{:016}", u), "user");
  Config config = parse_config(text, "bench.yaml", dir);
  config.manager.xmlrpc.port = 0;
  config.manager.control.port = 0;
  return config;
}

// The p-quantile (0..1) of `v` (sorted in place), nearest rank.
inline double quantile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace flexmon::bench
