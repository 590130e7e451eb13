// HTTP Basic authentication of XML-RPC callers against config.users. The
// header is parsed here (bounded, strict base64) rather than by Abyss, and
// tokens are compared in constant time through their SHA-256 digests.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"

namespace flexmon::manager {

// Longest Authorization header accepted, in bytes.
constexpr std::size_t kMaxAuthHeader = 1024;

struct Credentials {
  std::string user;
  std::string token;
};

// Parses "Basic base64(user:token)"; nullopt for anything else.
std::optional<Credentials> parse_basic_auth(std::string_view header);

class Authenticator {
 public:
  explicit Authenticator(const std::vector<UserConfig>& users);
  // The user the header proves, or nullptr. Thread-safe.
  const UserConfig* authenticate(std::string_view header) const;

 private:
  struct Entry {
    UserConfig user;
    std::array<unsigned char, 32> digest;
  };
  std::vector<Entry> users_;
};

}  // namespace flexmon::manager
