#include "clients/rpc_client.h"

#include <gtest/gtest.h>

namespace flexmon {
namespace {

TEST(RpcUrl, SplitsCredentials) {
  auto e = parse_rpc_url("http://demo:s3cr3t@127.0.0.1:8470/RPC2");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->url, "http://127.0.0.1:8470/RPC2");
  EXPECT_EQ(e->user, "demo");
  EXPECT_EQ(e->token, "s3cr3t");
}

TEST(RpcUrl, DefaultsThePath) {
  auto e = parse_rpc_url("http://127.0.0.1:8470");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->url, "http://127.0.0.1:8470/RPC2");
  EXPECT_TRUE(e->user.empty());
}

TEST(RpcUrl, RejectsWhatIsNotAUrl) {
  EXPECT_FALSE(parse_rpc_url("127.0.0.1:8470").ok());
  EXPECT_EQ(parse_rpc_url("ftp://x/").error().message,
            "unsupported URL scheme 'ftp' (expected http or https)");
  EXPECT_FALSE(parse_rpc_url("http://user:pw@/RPC2").ok());
}

TEST(RpcClient, UnreachableServerIsATransportFailure) {
  // Port 1 on loopback: nothing listens there, the connection is refused.
  RpcClient client(*parse_rpc_url("http://u:t@127.0.0.1:1/RPC2"), 2000);
  auto outcome = client.call("node.list", xmlrpc_c::paramList());
  ASSERT_TRUE(std::holds_alternative<RpcFailure>(outcome));
  EXPECT_EQ(std::get<RpcFailure>(outcome).code, 0);
}

}  // namespace
}  // namespace flexmon
