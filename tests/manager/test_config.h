// A config for manager tests: three nodes, a user of each role, loopback
// ports chosen by the kernel, files under a fresh temporary folder. The
// users' tokens (the config holds only their hashes) and Basic headers:
#pragma once

#include <filesystem>
#include <random>
#include <string>

#include "common/clock.h"
#include "common/config.h"

namespace flexmon::manager::testing {

// alice (admin): alice-token-0123456789abcdef
inline const std::string kAliceAuth = "Basic YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg==";
// bob (user): bob-token-0123456789abcdef
inline const std::string kBobAuth = "Basic Ym9iOmJvYi10b2tlbi0wMTIzNDU2Nzg5YWJjZGVm";
// carol (reader): carol-token-0123456789abcdef
inline const std::string kCarolAuth = "Basic Y2Fyb2w6Y2Fyb2wtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg==";
// svc (service): svc-token-0123456789abcdef
inline const std::string kSvcAuth = "Basic c3ZjOnN2Yy10b2tlbi0wMTIzNDU2Nzg5YWJjZGVm";

// Clocks the test steps: UTC time is `utc_ns`, monotonic time `mono`.
struct SteppedClock {
  UtcNs utc_ns = utc_now_ns();
  MonoClock::time_point mono = MonoClock::now();
  TimeSource clock() {
    return {[this] { return utc_ns; }, [this] { return mono; }};
  }
};

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
  - {name: alice, token_hash: "hmac-sha256:28:000102030405060708090a0b0c0d0e0f:95fd288ef5ebf6ed5816c420792ba921279f0d06ae564b38bdca924e2a39178b", role: admin}
  - {name: bob, token_hash: "hmac-sha256:26:101112131415161718191a1b1c1d1e1f:71509f680090cccbc12d208413efa7fd231c170d24d1453f96718eed39c8ecfd", role: user}
  - {name: carol, token_hash: "hmac-sha256:28:202122232425262728292a2b2c2d2e2f:d1b7fcaa26c4ccd5c1b1aa7608a1d9cb28a7b0223acdb55e14bebf563cb8f81b", role: reader}
  - {name: svc, token_hash: "hmac-sha256:26:303132333435363738393a3b3c3d3e3f:dc08e276dd4a508ecd2ad51024145d461d27150fa9ad1f29910050aaec42dd9d", role: service}
)";
  Config config = parse_config(text, "test.yaml", dir);
  // Ephemeral ports (the config file itself cannot say 0).
  config.manager.xmlrpc.port = 0;
  config.manager.control.port = 0;
  return config;
}

}  // namespace flexmon::manager::testing
