// The value of one symbol of RFC 4648 base64, shared by the two strict
// readers of base64 from outside: HTTP Basic credentials (auth.cpp) and
// <base64> values of XML-RPC calls (call_guard.cpp).
#pragma once

namespace flexmon::manager {

// 0..63, or -1 for a character that is not a base64 symbol ('=' included).
constexpr int base64_symbol_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace flexmon::manager
