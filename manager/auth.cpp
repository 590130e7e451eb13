#include "manager/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cctype>

namespace flexmon::manager {

namespace {

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

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
      v[j] = base64_value(c);
      if (v[j] < 0) return std::nullopt;
    }
    std::uint32_t n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out.push_back(static_cast<char>(n >> 16));
    if (pad < 2) out.push_back(static_cast<char>(n >> 8));
    if (pad < 1) out.push_back(static_cast<char>(n));
  }
  return out;
}

std::array<unsigned char, 32> sha256(std::string_view data) {
  std::array<unsigned char, 32> d{};
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d.data());
  return d;
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

Authenticator::Authenticator(const std::vector<UserConfig>& users) {
  for (const auto& u : users) users_.push_back({u, sha256(u.token)});
}

const UserConfig* Authenticator::authenticate(std::string_view header) const {
  auto credentials = parse_basic_auth(header);
  if (!credentials) return nullptr;
  const auto presented = sha256(credentials->token);
  const Entry* match = nullptr;
  for (const auto& e : users_)
    if (e.user.name == credentials->user) match = &e;
  // Compare even for an unknown user, so timing says nothing about names.
  static const std::array<unsigned char, 32> kNoUser = sha256("\x01no such user");
  const auto& expected = match ? match->digest : kNoUser;
  const bool equal = CRYPTO_memcmp(expected.data(), presented.data(), expected.size()) == 0;
  return match && equal ? &match->user : nullptr;
}

}  // namespace flexmon::manager
