// The `flexmon` command line in process: the exit status of each kind of
// failure found before or instead of a successful call, and the moved storage
// commands naming flexmon-admin.
#include "clients/cli.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "common/exit_status.h"

namespace flexmon {
namespace {

struct Run {
  int status;
  std::string err;
};

Run run(std::vector<std::string> args) {
  args.insert(args.begin(), "flexmon");
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  ::unsetenv("FLEXMON_URL");
  testing::internal::CaptureStderr();
  int status = client_main(static_cast<int>(argv.size()), argv.data());
  return {status, testing::internal::GetCapturedStderr()};
}

// A loopback URL on which nothing listens.
std::string closed_url() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t size = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &size);
  ::close(fd);
  return "http://demo:token@127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/RPC2";
}

TEST(Cli, FlushAndDumpNameFlexmonAdminAndExit64) {
  auto flush = run({"flush", "--status", "--config", "flexmon.yaml"});
  EXPECT_EQ(flush.status, kExitUsage);
  EXPECT_EQ(flush.err,
            "flexmon: 'flush' runs on the collector's host: use flexmon-admin flush --status "
            "--config flexmon.yaml\n");
  auto dump = run({"dump", "--config", "flexmon.yaml", "--week", "2026-W07"});
  EXPECT_EQ(dump.status, kExitUsage);
  EXPECT_EQ(dump.err,
            "flexmon: 'dump' runs on the collector's host: use flexmon-admin dump --config "
            "flexmon.yaml --week 2026-W07\n");
  auto bare = run({"flush"});
  EXPECT_EQ(bare.status, kExitUsage);
  EXPECT_EQ(bare.err, "flexmon: 'flush' runs on the collector's host: use flexmon-admin flush\n");
}

TEST(Cli, UsageFoundAfterParsingExits64) {
  EXPECT_EQ(run({"nodes"}).status, kExitUsage);  // no --url, no FLEXMON_URL
  EXPECT_EQ(run({"--url", "ftp://host/RPC2", "nodes"}).status, kExitUsage);
  auto since = run({"--url", closed_url(), "results", "--since", "yesterday"});
  EXPECT_EQ(since.status, kExitUsage);
  EXPECT_NE(since.err.find("'yesterday' is not a time"), std::string::npos) << since.err;
  EXPECT_EQ(run({"--url", closed_url(), "probe", "add"}).status, kExitUsage);  // no paths
}

TEST(Cli, AServerOutOfReachExits69) {
  auto nodes = run({"--url", closed_url(), "--timeout", "5", "nodes"});
  EXPECT_EQ(nodes.status, kExitUnavailable);
  EXPECT_EQ(nodes.err.rfind("flexmon: cannot reach the server: ", 0), 0u) << nodes.err;
}

}  // namespace
}  // namespace flexmon
