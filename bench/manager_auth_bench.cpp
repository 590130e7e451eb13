// What authenticating one call costs the manager: CPU ns per
// Authenticator::authenticate for the right token, a wrong token, an
// unknown user and a header that is not Basic, among 66 users whose tokens
// the config holds as salted hashes (bench/manager_bench_util.h). The peer
// in the same run is parse_basic_auth alone: the header's cost without the
// hash, so the difference is what hashing adds. One figure a line:
// "name value"; bench/run-manager takes medians.
#include <time.h>

#include <cstdio>
#include <string>

#include "bench/manager_bench_util.h"
#include "manager/auth.h"

namespace {

using flexmon::manager::Authenticator;

double cpu_ns() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e9 + static_cast<double>(t.tv_nsec);
}

// CPU ns per call of `f`, over a bounded number of calls.
template <typename F>
double ns_per_call(F&& f) {
  constexpr int kCalls = 200'000;
  int sink = 0;
  const double start = cpu_ns();
  for (int i = 0; i < kCalls; ++i) sink += f() ? 1 : 0;
  const double spent = cpu_ns() - start;
  if (sink < 0) std::puts("");  // keeps the calls from being optimised away
  return spent / kCalls;
}

}  // namespace

int main() {
  auto dir = flexmon::bench::temp_dir("flexmon-auth-bench");
  flexmon::Config config = flexmon::bench::config_with_nodes(dir, 2);
  std::filesystem::remove_all(dir);
  Authenticator auth(config.users);
  // alice:alice-token-0123456789abcdef, alice:...abcdeg, mallory:..., bob without Basic.
  const std::string right = "Basic YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg==";
  const std::string wrong = "Basic YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZw==";
  const std::string unknown = "Basic bWFsbG9yeTphbGljZS10b2tlbi0wMTIzNDU2Nzg5YWJjZGVm";
  const std::string garbage = "Bearer YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg==";
  if (!auth.authenticate(right) || auth.authenticate(wrong) || auth.authenticate(unknown)) {
    std::fprintf(stderr, "manager_auth_bench: the bench's tokens do not match its config\n");
    return 1;
  }
  std::printf("auth_right_token_ns %.0f\n", ns_per_call([&] { return auth.authenticate(right); }));
  std::printf("auth_wrong_token_ns %.0f\n", ns_per_call([&] { return auth.authenticate(wrong); }));
  std::printf("auth_unknown_user_ns %.0f\n",
              ns_per_call([&] { return auth.authenticate(unknown); }));
  std::printf("auth_not_basic_ns %.0f\n", ns_per_call([&] { return auth.authenticate(garbage); }));
  std::printf("auth_peer_parse_only_ns %.0f\n",
              ns_per_call([&] { return flexmon::manager::parse_basic_auth(right).has_value(); }));
  return 0;
}
