// Message sealing: every wire message carries an HMAC-SHA256 of its body under
// the key of the node that sent it (or that it is for), so a forged, altered
// or misdirected message is recognised and dropped.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace google::protobuf {
class Arena;
}

namespace flexmon {

namespace wire {
class Message;
}

constexpr std::uint32_t kWireVersion = 1;
constexpr std::size_t kMacBytes = 32;

// HMAC-SHA256 under one key (OpenSSL EVP_MAC). Thread-safe for concurrent use.
class Sealer {
 public:
  explicit Sealer(std::string_view key);
  ~Sealer();
  Sealer(Sealer&&) noexcept;
  Sealer& operator=(Sealer&&) noexcept;

  std::array<std::uint8_t, kMacBytes> mac(std::string_view data) const;
  // Constant-time comparison against the expected MAC.
  bool verify(std::string_view data, std::string_view mac) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Serializes `message` (whose node must be set) into a sealed frame.
std::string seal(const wire::Message& message, const Sealer& key);

// The unsealed Hello that opens a control session (nothing to seal it with).
std::string unsealed_frame(const wire::Message& message);

// Why KeyRing::open_on refused a frame.
enum class OpenFault {
  none,
  malformed,     // not a Sealed frame, or another wire version
  unknown_node,  // no key for the frame's node
  bad_seal,      // the MAC does not verify, or the sealed body is not its node's message
};

struct OpenedOnArena {
  wire::Message* message = nullptr;  // owned by the arena; null iff fault != none
  OpenFault fault = OpenFault::none;
  std::string why;  // what was wrong, when refused
};

// The keys of every node, to open frames from any of them.
class KeyRing {
 public:
  void add(const std::string& node, std::string_view key);
  const Sealer* find(const std::string& node) const;

  // Parses, checks the version, finds the node's key, verifies the seal, and
  // parses the body. The error names what was wrong.
  Result<wire::Message> open(std::string_view frame) const;

  // As open(), with the message built on `arena`: for the collector, which
  // opens ~10,000 frames a second; a result batch's dozens of strings and
  // submessages then cost the arena's blocks instead of one heap allocation
  // and free each.
  OpenedOnArena open_on(std::string_view frame, google::protobuf::Arena& arena) const;

 private:
  std::map<std::string, Sealer, std::less<>> keys_;
};

// Opens a frame that must be sealed by `node` under `key`.
Result<wire::Message> open_from(std::string_view frame, const std::string& node, const Sealer& key);

// Opens an unsealed Hello frame.
Result<wire::Message> open_hello(std::string_view frame);

}  // namespace flexmon
