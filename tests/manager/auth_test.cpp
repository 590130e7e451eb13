// Basic authentication: parsing and checking against config.users.
#include "manager/auth.h"

#include <gtest/gtest.h>

namespace flexmon::manager {
namespace {

TEST(Auth, ParsesBasic) {
  auto c = parse_basic_auth("Basic YWxpY2U6czNjcjN0");  // alice:s3cr3t
  ASSERT_TRUE(c);
  EXPECT_EQ(c->user, "alice");
  EXPECT_EQ(c->token, "s3cr3t");
  EXPECT_TRUE(parse_basic_auth("basic   YWxpY2U6czNjcjN0 "));
  auto colon = parse_basic_auth("Basic YTpiOmM=");  // a:b:c
  ASSERT_TRUE(colon);
  EXPECT_EQ(colon->token, "b:c");
}

TEST(Auth, RejectsGarbage) {
  for (const char* h : {"", "Basic", "Basic ", "Bearer YWxpY2U6czNjcjN0", "BasicYWxpY2U6czNjcjN0",
                        "Basic YWxpY2U6czNjcjN", "Basic YWxp*2U6czNjcjN0",
                        "Basic YWxpY2U=", "Basic OnRva2Vu" /* ":token" */,
                        "Basic YQ==YQ==", "Basic YWxpY2UKOnQ=" /* newline */})
    EXPECT_FALSE(parse_basic_auth(h)) << h;
  std::string huge = "Basic " + std::string(4 * 1000, 'Q');
  EXPECT_FALSE(parse_basic_auth(huge));
}

TEST(Auth, ChecksUserAndToken) {
  std::vector<UserConfig> users{{"alice", "s3cr3t", Role::admin}, {"bob", "hunter2", Role::user}};
  Authenticator auth(users);
  const UserConfig* u = auth.authenticate("Basic YWxpY2U6czNjcjN0");
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->name, "alice");
  EXPECT_EQ(auth.authenticate("Basic YWxpY2U6d3Jvbmc="), nullptr);      // alice:wrong
  EXPECT_EQ(auth.authenticate("Basic bWFsbG9yeTpzM2NyM3Q="), nullptr);  // mallory:s3cr3t
  EXPECT_EQ(auth.authenticate("Basic Ym9iOnMzY3IzdA=="), nullptr);      // bob:s3cr3t
  EXPECT_EQ(auth.authenticate("Basic !!!"), nullptr);
}

}  // namespace
}  // namespace flexmon::manager
