#include "manager/auth.h"

#include <openssl/rand.h>
#include <termios.h>
#include <unistd.h>

#include <cctype>

#include <iostream>
#include <sstream>
#include <stdexcept>
#include "manager/base64.h"

#include <fmt/format.h>

#include "common/daemon.h"

namespace flexmon::manager {

namespace {

// Strict RFC 4648 base64 with padding; nullopt on any other character.
std::optional<std::string> decode_base64(std::string_view in) {
  if (in.empty() || in.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (std::size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    int v[4];
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      char c = in[i + j];
      if (c == '=' && last && j >= 2) {
        v[j] = 0;
        ++pad;
        continue;
      }
      if (pad) return std::nullopt;  // data after padding
      v[j] = base64_symbol_value(c);
      if (v[j] < 0) return std::nullopt;
    }
    std::uint32_t n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out.push_back(static_cast<char>(n >> 16));
    if (pad < 2) out.push_back(static_cast<char>(n >> 8));
    if (pad < 1) out.push_back(static_cast<char>(n));
  }
  return out;
}

// Random bytes from OpenSSL's CSPRNG; throws when it has none to give.
std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
    throw std::runtime_error("OpenSSL: no random bytes available");
  return out;
}

std::string base64url(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  std::uint32_t bits = 0;
  int held = 0;
  for (unsigned char c : bytes) {
    bits = (bits << 8) | c;
    held += 8;
    while (held >= 6) {
      held -= 6;
      out.push_back(kAlphabet[(bits >> held) & 63]);
    }
  }
  if (held > 0) out.push_back(kAlphabet[(bits << (6 - held)) & 63]);
  return out;
}

constexpr std::size_t kSaltBytes = 16;

// Why `token` cannot be used, or empty.
std::string token_problem(std::string_view token) {
  // A longer line is read only up to just past the bound.
  if (token.size() < kMinTokenChars || token.size() > kMaxTokenChars)
    return fmt::format(
        "the token is {} characters; it must be {} to {} (at least 128 random bits: use "
        "--generate)",
        token.size() > kMaxTokenChars ? fmt::format("more than {}", kMaxTokenChars)
                                      : std::to_string(token.size()),
        kMinTokenChars, kMaxTokenChars);
  for (char c : token)
    if (static_cast<unsigned char>(c) < 0x21 || c == 0x7f)
      return "the token holds a space or a control character";
  return {};
}

}  // namespace

std::optional<Credentials> parse_basic_auth(std::string_view header) {
  if (header.size() > kMaxAuthHeader) return std::nullopt;
  while (!header.empty() && (header.front() == ' ' || header.front() == '\t'))
    header.remove_prefix(1);
  while (!header.empty() && (header.back() == ' ' || header.back() == '\t'))
    header.remove_suffix(1);
  constexpr std::string_view kScheme = "basic";
  if (header.size() <= kScheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < kScheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(header[i])) != kScheme[i]) return std::nullopt;
  header.remove_prefix(kScheme.size());
  if (header.front() != ' ') return std::nullopt;
  while (!header.empty() && header.front() == ' ') header.remove_prefix(1);
  auto decoded = decode_base64(header);
  if (!decoded) return std::nullopt;
  for (char c : *decoded)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return std::nullopt;
  auto colon = decoded->find(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  return Credentials{decoded->substr(0, colon), decoded->substr(colon + 1)};
}

std::string generate_token() { return base64url(random_bytes(32)); }

TokenHash make_token_hash(std::string_view token) {
  if (token.size() < kMinTokenChars || token.size() > kMaxTokenChars)
    throw std::invalid_argument(
        fmt::format("a token must be {} to {} characters", kMinTokenChars, kMaxTokenChars));
  TokenHash hash;
  hash.length = static_cast<std::uint32_t>(token.size());
  hash.salt = random_bytes(kSaltBytes);
  auto digest = Sealer(hash.salt).mac(token);
  hash.digest.assign(digest.begin(), digest.end());
  return hash;
}

Authenticator::Authenticator(const std::vector<UserConfig>& users) {
  for (const auto& u : users) users_.emplace(u.name, Entry{u, Sealer(u.token_hash.salt)});
  // An unknown user costs the same HMAC as a known one, against a hash that
  // no token matches, so timing says nothing about which names exist.
  UserConfig nobody{"", make_token_hash(generate_token()), Role::reader};
  nobody_ = std::make_unique<Entry>(Entry{nobody, Sealer(nobody.token_hash.salt)});
}

const UserConfig* Authenticator::authenticate(std::string_view header) const {
  auto credentials = parse_basic_auth(header);
  if (!credentials) return nullptr;
  auto found = users_.find(credentials->user);
  const bool known = found != users_.end();
  const Entry& entry = known ? found->second : *nobody_;
  const TokenHash& hash = entry.user.token_hash;
  // Both checks always run: the length is not secret, but nothing is gained
  // by returning early.
  const bool digest_ok = entry.keyed.verify(credentials->token, hash.digest);
  const bool length_ok = credentials->token.size() == hash.length;
  return known & digest_ok & length_ok ? &entry.user : nullptr;
}

int hash_token(bool generate, std::istream& in, std::ostream& out, std::ostream& err) {
  std::string token;
  if (generate) {
    token = generate_token();
  } else {
    // One line, read with a bound: a token is at most kMaxTokenChars.
    char c = 0;
    while (token.size() <= kMaxTokenChars + 1 && in.get(c) && c != '\n') token.push_back(c);
    if (!token.empty() && token.back() == '\r') token.pop_back();
    if (c == '\n' && in.peek() != std::char_traits<char>::eof()) {
      err << "hash-token: expected one line (the token) on standard input, got more\n";
      return kExitUsage;
    }
    if (token.empty()) {
      err << "hash-token: no token on standard input (pipe one in, or use --generate)\n";
      return kExitUsage;
    }
    if (auto problem = token_problem(token); !problem.empty()) {
      err << "hash-token: " << problem << "\n";
      return kExitUsage;
    }
  }
  const std::string line =
      fmt::format("token_hash: \"{}\"", format_token_hash(make_token_hash(token)));
  if (generate) out << "token: " << token << "\n";
  out << line << "\n";
  if (generate)
    err << "hash-token: the token above is shown only now: give it to its user; the config "
           "holds only token_hash (schemas/config.md, \"Users and tokens\")\n";
  return kExitOk;
}

int hash_token_command(bool generate) {
  if (generate || !isatty(STDIN_FILENO))
    return hash_token(generate, std::cin, std::cout, std::cerr);
  // A token typed at a terminal is not echoed (nor left on the screen).
  termios saved{};
  const bool quiet = tcgetattr(STDIN_FILENO, &saved) == 0;
  if (quiet) {
    termios silent = saved;
    silent.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &silent);
  }
  std::cerr << "token (not echoed; Enter ends it): " << std::flush;
  std::string line;
  std::getline(std::cin, line);
  if (quiet) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  std::cerr << "\n";
  std::istringstream typed(line);
  return hash_token(false, typed, std::cout, std::cerr);
}

}  // namespace flexmon::manager
