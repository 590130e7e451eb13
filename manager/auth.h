// HTTP Basic authentication of XML-RPC callers against config.users, whose
// tokens the config holds only as salted hashes (TokenHash, common/config.h),
// and `flexmon-manager hash-token`, which makes those hashes.
//
// Why HMAC-SHA256 under a random salt, and not a password KDF (bcrypt,
// scrypt, Argon2): every call authenticates, each call on a keep-alive
// connection and every unauthenticated guess alike, so checking a token must
// cost microseconds; a KDF tuned to cost ~100 ms would let anyone with a
// wrong token burn the manager's CPU and would cap keep-alive calls per
// second. A KDF's slowness protects passwords that people choose, which are
// guessable, after the file is stolen; flexmon's tokens are machine-made
// secrets of at least 128 random bits (hash-token makes 256, and the config
// refuses hashes of tokens under kMinTokenChars characters), which no amount
// of fast hashing guesses. The salt makes equal tokens hash differently and
// rules out precomputed tables; the comparison is constant-time.
#pragma once

#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/config.h"
#include "common/seal.h"

namespace flexmon::manager {

// Longest Authorization header accepted, in bytes.
constexpr std::size_t kMaxAuthHeader = 1024;

struct Credentials {
  std::string user;
  std::string token;
};

// Parses "Basic base64(user:token)"; nullopt for anything else.
std::optional<Credentials> parse_basic_auth(std::string_view header);

// A new token: 32 random bytes (256 bits) in base64url without padding, 43
// characters that need no escaping in a URL's user:token@.
std::string generate_token();

// The hash of `token` under a fresh random salt of 16 bytes. Throws
// std::invalid_argument when the token's length is outside
// kMinTokenChars..kMaxTokenChars.
TokenHash make_token_hash(std::string_view token);

class Authenticator {
 public:
  explicit Authenticator(const std::vector<UserConfig>& users);
  // The user the header proves, or nullptr. Costs one HMAC-SHA256 of the
  // presented token whether the user exists or not, and compares in
  // constant time. Thread-safe.
  const UserConfig* authenticate(std::string_view header) const;

 private:
  struct Entry {
    UserConfig user;
    Sealer keyed;  // HMAC-SHA256 keyed with the user's salt, ready to use
  };
  std::unordered_map<std::string, Entry> users_;
  std::unique_ptr<Entry> nobody_;  // stands in for an unknown user
};

// `flexmon-manager hash-token`: reads one token (a line) from `in`, or makes
// one when `generate` (written to `out` as "token: T", once), and writes the
// config line `token_hash: "..."` to `out`. Messages go to `err`. Returns
// the exit code (kExitOk, or kExitUsage for a token that cannot be used).
int hash_token(bool generate, std::istream& in, std::ostream& out, std::ostream& err);

// The same on the standard streams; a terminal on stdin is asked for the
// token without echo.
int hash_token_command(bool generate);

}  // namespace flexmon::manager
