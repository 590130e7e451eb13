// Basic authentication against hashed tokens: parsing the header, the hash
// format as the config loader reads it, `flexmon-manager hash-token`, and
// the checks of users[] in the config.
#include "manager/auth.h"

#include <gtest/gtest.h>

#include <sstream>

#include "common/daemon.h"

namespace flexmon::manager {
namespace {

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 3) {
    std::uint32_t n = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) n |= static_cast<unsigned char>(in[i + 1]) << 8;
    if (i + 2 < in.size()) n |= static_cast<unsigned char>(in[i + 2]);
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back(i + 2 < in.size() ? kAlphabet[n & 63] : '=');
  }
  return out;
}

std::string basic(const std::string& user, const std::string& token) {
  return "Basic " + base64(user + ":" + token);
}

// A config of one node and the given users: section.
std::string config_with_users(const std::string& users) {
  return "nodes:\n  - {id: n1, site: s, address: 127.0.0.1, key: "
         "000102030405060708090a0b0c0d0e0f}\nusers:\n" +
         users;
}

// The message of the ConfigError that parsing `text` throws.
std::string error_of(const std::string& text) {
  try {
    parse_config(text, "test.yaml", "/base");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

const std::string kAliceToken = "alice-token-0123456789abcdef";
const std::string kBobToken = "bob-token-0123456789abcdef";

TEST(Auth, ParsesBasic) {
  auto c = parse_basic_auth("Basic YWxpY2U6czNjcjN0");  // alice:s3cr3t
  ASSERT_TRUE(c);
  EXPECT_EQ(c->user, "alice");
  EXPECT_EQ(c->token, "s3cr3t");
  EXPECT_TRUE(parse_basic_auth("basic   YWxpY2U6czNjcjN0 "));
  auto colon = parse_basic_auth("Basic YTpiOmM=");  // a:b:c
  ASSERT_TRUE(colon);
  EXPECT_EQ(colon->token, "b:c");
  EXPECT_EQ(basic("alice", "s3cr3t"), "Basic YWxpY2U6czNjcjN0");
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

TEST(Auth, ChecksUserAndTokenAgainstHashes) {
  std::vector<UserConfig> users{{"alice", make_token_hash(kAliceToken), Role::admin},
                                {"bob", make_token_hash(kBobToken), Role::user}};
  Authenticator auth(users);
  const UserConfig* u = auth.authenticate(basic("alice", kAliceToken));
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->name, "alice");
  EXPECT_EQ(u->role, Role::admin);
  ASSERT_NE(auth.authenticate(basic("bob", kBobToken)), nullptr);
  EXPECT_EQ(auth.authenticate(basic("bob", kBobToken))->name, "bob");
  EXPECT_EQ(auth.authenticate(basic("alice", "wrong")), nullptr);
  EXPECT_EQ(auth.authenticate(basic("alice", kBobToken)), nullptr);      // another user's token
  EXPECT_EQ(auth.authenticate(basic("mallory", kAliceToken)), nullptr);  // unknown user
  EXPECT_EQ(auth.authenticate(basic("alice", kAliceToken + "x")), nullptr);
  EXPECT_EQ(auth.authenticate(basic("alice", kAliceToken.substr(1))), nullptr);
  EXPECT_EQ(auth.authenticate(basic("Alice", kAliceToken)), nullptr);
  EXPECT_EQ(auth.authenticate("Basic !!!"), nullptr);
}

TEST(Auth, EachHashHasItsOwnSaltAndRoundTripsThroughItsText) {
  TokenHash a = make_token_hash(kAliceToken), b = make_token_hash(kAliceToken);
  EXPECT_EQ(a.salt.size(), 16u);
  EXPECT_EQ(a.digest.size(), 32u);
  EXPECT_EQ(a.length, kAliceToken.size());
  EXPECT_NE(a.salt, b.salt);
  EXPECT_NE(a.digest, b.digest);
  auto parsed = parse_token_hash(format_token_hash(a));
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed->length, a.length);
  EXPECT_EQ(parsed->salt, a.salt);
  EXPECT_EQ(parsed->digest, a.digest);
  // Both hashes of one token are valid.
  Authenticator auth({{"a", a, Role::user}, {"b", b, Role::user}});
  EXPECT_NE(auth.authenticate(basic("a", kAliceToken)), nullptr);
  EXPECT_NE(auth.authenticate(basic("b", kAliceToken)), nullptr);
  EXPECT_THROW(make_token_hash("too-short"), std::invalid_argument);
}

// The known answer: HMAC-SHA256(key = salt, token), as the openssl command in
// schemas/config.md computes it.
TEST(Auth, HashIsHmacSha256OfTheTokenUnderTheSalt) {
  auto hash = parse_token_hash(
      "hmac-sha256:28:000102030405060708090a0b0c0d0e0f:"
      "95fd288ef5ebf6ed5816c420792ba921279f0d06ae564b38bdca924e2a39178b");
  ASSERT_TRUE(hash) << hash.error().message;
  Authenticator auth({{"alice", *hash, Role::admin}});
  EXPECT_NE(auth.authenticate(basic("alice", kAliceToken)), nullptr);
}

TEST(AuthConfig, RefusesATokenInClear) {
  EXPECT_EQ(error_of(config_with_users("  - name: demo\n    token: 0123456789abcdef0123456789\n")),
            "test.yaml:5: users[0].token: tokens are not stored in clear: replace this key with "
            "token_hash, the line that `flexmon-manager hash-token` prints for the token on its "
            "standard input (schemas/config.md, \"Users and tokens\")");
  // Beside a hash too: the file must not hold the token at all.
  EXPECT_NE(error_of(config_with_users("  - {name: demo, token: 0123456789abcdef0123456789, "
                                       "token_hash: \"" +
                                       format_token_hash(make_token_hash(kAliceToken)) + "\"}\n"))
                .find("users[0].token: tokens are not stored in clear"),
            std::string::npos);
}

TEST(AuthConfig, RefusesMalformedHashesNamingFileLineAndKey) {
  const std::string salt = "000102030405060708090a0b0c0d0e0f";
  const std::string digest(64, 'a');
  const std::string expected =
      "expected hmac-sha256:LENGTH:SALT_HEX:DIGEST_HEX as `flexmon-manager hash-token` prints it";
  struct Case {
    std::string value;
    std::string why;
  };
  const Case cases[] = {
      {"", expected},
      {"hmac-sha256:28:" + salt, expected},
      {"hmac-sha256:28:" + salt + ":" + digest + ":00", expected},
      {"sha256:28:" + salt + ":" + digest, "unknown scheme (only hmac-sha256); " + expected},
      {"hmac-sha256::" + salt + ":" + digest,
       "LENGTH: expected the token's length in characters; " + expected},
      {"hmac-sha256:2x:" + salt + ":" + digest,
       "LENGTH: expected the token's length in characters; " + expected},
      {"hmac-sha256:-28:" + salt + ":" + digest,
       "LENGTH: expected the token's length in characters; " + expected},
      {"hmac-sha256:21:" + salt + ":" + digest,
       "the token is 21 characters; tokens must be 22 to 256 characters (at least 128 random "
       "bits): `flexmon-manager hash-token --generate` makes one"},
      {"hmac-sha256:257:" + salt + ":" + digest,
       "the token is 257 characters; tokens must be 22 to 256 characters (at least 128 random "
       "bits): `flexmon-manager hash-token --generate` makes one"},
      {"hmac-sha256:28:" + salt.substr(1) + ":" + digest,
       "SALT_HEX: expected 32 to 128 hex digits"},
      {"hmac-sha256:28:" + salt.substr(2) + ":" + digest,
       "SALT_HEX: expected 32 to 128 hex digits"},
      {"hmac-sha256:28:zz" + salt.substr(2) + ":" + digest,
       "SALT_HEX: expected 32 to 128 hex digits"},
      {"hmac-sha256:28:" + salt + ":" + digest.substr(2), "DIGEST_HEX: expected 64 hex digits"},
      {"hmac-sha256:28:" + salt + ":" + digest + "aa", "DIGEST_HEX: expected 64 hex digits"},
      {"hmac-sha256:28:" + salt + ":g" + digest.substr(1), "DIGEST_HEX: expected 64 hex digits"},
  };
  for (const auto& c : cases)
    EXPECT_EQ(error_of(config_with_users("  - name: demo\n    role: user\n    token_hash: \"" +
                                         c.value + "\"\n")),
              "test.yaml:6: users[0].token_hash: " + c.why)
        << c.value;
  EXPECT_EQ(error_of(config_with_users("  - name: demo\n    role: user\n")),
            "test.yaml:4: users[0].token_hash: required key is missing");
  EXPECT_EQ(error_of(config_with_users("  - name: demo\n    token_hash: [1]\n")),
            "test.yaml:5: users[0].token_hash: expected a string");
}

TEST(AuthConfig, ReadsEveryRole) {
  const std::string hash = "\"" + format_token_hash(make_token_hash(kAliceToken)) + "\"";
  Config config = parse_config(config_with_users("  - {name: r, token_hash: " + hash +
                                                 ", role: reader}\n"
                                                 "  - {name: u, token_hash: " +
                                                 hash +
                                                 "}\n"
                                                 "  - {name: s, token_hash: " +
                                                 hash +
                                                 ", role: service}\n"
                                                 "  - {name: a, token_hash: " +
                                                 hash + ", role: admin}\n"),
                               "test.yaml", "/base");
  EXPECT_EQ(config.find_user("r")->role, Role::reader);
  EXPECT_EQ(config.find_user("u")->role, Role::user);
  EXPECT_EQ(config.find_user("s")->role, Role::service);
  EXPECT_EQ(config.find_user("a")->role, Role::admin);
  EXPECT_EQ(error_of(config_with_users("  - {name: r, token_hash: " + hash + ", role: root}\n")),
            "test.yaml:4: users[0].role: expected 'reader', 'user', 'service' or 'admin', got "
            "'root'");
}

TEST(AuthConfig, ServiceHasItsOwnLimitsAndReaderNone) {
  const std::string users =
      "  - {name: s, token_hash: \"" + format_token_hash(make_token_hash(kAliceToken)) + "\"}\n";
  Config config = parse_config(
      config_with_users(users) +
          "limits:\n  max_paths_per_request: 10\n  roles:\n    service: {max_paths_per_request: "
          "500}\n",
      "test.yaml", "/base");
  EXPECT_EQ(config.limits_for(Role::service).max_paths_per_request, 500u);
  EXPECT_EQ(config.limits_for(Role::user).max_paths_per_request, 10u);
  EXPECT_EQ(config.limits_for(Role::reader).max_paths_per_request, 10u);
  EXPECT_EQ(error_of(config_with_users(users) +
                     "limits:\n  roles:\n    reader: {max_paths_per_request: 500}\n"),
            "test.yaml:7: limits.roles.reader: unknown key");
}

// What hash-token prints is what the loader reads, and the token it was
// given (or made) then authenticates.
TEST(HashToken, OutputRoundTripsThroughTheConfigLoader) {
  for (const bool generate : {false, true}) {
    std::istringstream in(kAliceToken + "\n");
    std::ostringstream out, err;
    ASSERT_EQ(hash_token(generate, in, out, err), kExitOk) << err.str();
    std::string text = out.str();
    std::string token = kAliceToken;
    if (generate) {
      ASSERT_EQ(text.rfind("token: ", 0), 0u) << text;
      auto end = text.find('\n');
      token = text.substr(7, end - 7);
      text = text.substr(end + 1);
      EXPECT_EQ(token.size(), 43u);  // 256 bits, base64url
      EXPECT_EQ(token.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                        "0123456789-_"),
                std::string::npos)
          << token;
      EXPECT_NE(err.str().find("shown only now"), std::string::npos);
    }
    ASSERT_EQ(text.rfind("token_hash: \"hmac-sha256:", 0), 0u) << text;
    ASSERT_EQ(text.back(), '\n');
    const std::string line = text.substr(0, text.size() - 1);
    EXPECT_EQ(line.find('\n'), std::string::npos);
    // Pasted as a flow mapping's entry and as a block mapping's line.
    for (const std::string& users : {"  - {name: x, " + line + ", role: reader}\n",
                                     "  - name: x\n    " + line + "\n    role: reader\n"}) {
      Config config = parse_config(config_with_users(users), "test.yaml", "/base");
      Authenticator auth(config.users);
      const UserConfig* u = auth.authenticate(basic("x", token));
      ASSERT_NE(u, nullptr) << users;
      EXPECT_EQ(u->role, Role::reader);
      EXPECT_EQ(auth.authenticate(basic("x", token + "!")), nullptr);
    }
  }
}

TEST(HashToken, TwoGeneratedTokensDiffer) { EXPECT_NE(generate_token(), generate_token()); }

TEST(HashToken, RefusesTokensThatCannotBeUsedAndPrintsNothing) {
  const std::string cases[] = {"",
                               "\n",
                               "short\n",
                               std::string(21, 'a') + "\n",
                               std::string(257, 'a') + "\n",
                               std::string(5000, 'a'),
                               kAliceToken + "\nsecond line\n",
                               "alice token 0123456789abcdef\n",
                               "alice-token-0123456789\tabcdef\n"};
  for (const auto& input : cases) {
    std::istringstream in(input);
    std::ostringstream out, err;
    EXPECT_EQ(hash_token(false, in, out, err), kExitUsage) << input;
    EXPECT_EQ(out.str(), "") << input;
    EXPECT_NE(err.str().find("hash-token: "), std::string::npos) << input;
  }
  std::istringstream long_line(std::string(5000, 'a'));
  std::ostringstream out, err;
  EXPECT_EQ(hash_token(false, long_line, out, err), kExitUsage);
  EXPECT_EQ(err.str(),
            "hash-token: the token is more than 256 characters; it must be 22 to 256 (at least "
            "128 random bits: use --generate)\n");
  // Without a trailing newline, and with a CRLF, it is the same token.
  for (const std::string& input : {kAliceToken, kAliceToken + "\r\n"}) {
    std::istringstream in(input);
    std::ostringstream out, err;
    ASSERT_EQ(hash_token(false, in, out, err), kExitOk) << err.str();
    auto line = out.str();
    auto hash = parse_token_hash(line.substr(13, line.size() - 15));
    ASSERT_TRUE(hash) << line;
    Authenticator auth({{"a", *hash, Role::user}});
    EXPECT_NE(auth.authenticate(basic("a", kAliceToken)), nullptr);
  }
}

}  // namespace
}  // namespace flexmon::manager
