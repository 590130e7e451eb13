// Message sealing: every wire message carries an HMAC-SHA256 of its body under
// a key of the node that sent it (or that it is for), so a forged, altered
// or misdirected message is recognised and dropped. Each frame names the id
// of the key that sealed it, so a node can change keys without downtime: the
// receivers hold the old and the new key for a while (schemas/wire.md, "Key
// rotation").
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace google::protobuf {
class Arena;
}

namespace flexmon {

namespace wire {
class Message;
class Sealed;
}  // namespace wire
struct NodeConfig;

// Version 2 added Sealed.key_id; a version 1 frame is refused as malformed.
constexpr std::uint32_t kWireVersion = 2;
constexpr std::size_t kMacBytes = 32;
// The id of a node's key when its config gives a single `key`.
constexpr std::uint32_t kDefaultKeyId = 1;

// HMAC-SHA256 under one key (OpenSSL EVP_MAC), and the key's id, which every
// frame sealed under it carries. The tree's one HMAC: frames, and the seals
// of the prober's abw / throughput probes (truncated, prober/tools_internal.h).
// Thread-safe for concurrent use.
class Sealer {
 public:
  explicit Sealer(std::string_view key, std::uint32_t id = kDefaultKeyId);
  ~Sealer();
  Sealer(Sealer&&) noexcept;
  Sealer& operator=(Sealer&&) noexcept;

  std::uint32_t id() const { return id_; }
  std::array<std::uint8_t, kMacBytes> mac(std::string_view data) const;
  // Constant-time comparison against the expected MAC.
  bool verify(std::string_view data, std::string_view mac) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::uint32_t id_;
};

// Serializes `message` (whose node must be set) into a frame sealed under
// `key`, naming key.id().
std::string seal(const wire::Message& message, const Sealer& key);

// The unsealed Hello that opens a control session (nothing to seal it with).
std::string unsealed_frame(const wire::Message& message);

// Why KeyRing::open refused a frame; each has its own counter in the
// collector and the manager.
enum class OpenFault {
  none,
  malformed,     // not a Sealed frame, or another wire version
  unknown_node,  // no key for the frame's node
  unknown_key,   // the node has no key of the frame's key id
  retired_key,   // sealed properly, but under a key the config marks retired
  bad_seal,      // the MAC does not verify, or the sealed body is not its node's message
};

// What KeyRing::open made of a frame.
struct Opened {
  OpenFault fault = OpenFault::none;
  std::string why;              // what was wrong, when refused; outside bytes escaped
  const Sealer* key = nullptr;  // the active key that verified the frame; set iff ok()
  bool ok() const { return fault == OpenFault::none; }
};

struct OpenedOnArena : Opened {
  wire::Message* message = nullptr;  // owned by the arena; set iff ok()
};

// The keys of every node, to open frames from any of them: each node's
// active keys, and its retired ones, which open nothing but let a frame
// under one be told (retired_key) from a forgery (bad_seal).
class KeyRing {
 public:
  // Adds key `id` of `node`; throws std::invalid_argument if the node has it.
  void add(const std::string& node, std::string_view key, std::uint32_t id = kDefaultKeyId,
           bool retired = false);
  // Adds every key of a configured node.
  void add(const NodeConfig& node);

  // The key `node` seals with: its active key of the highest id; null if none.
  const Sealer* find(const std::string& node) const;

  // Parses, checks the version, finds the key of the frame's node and key
  // id, verifies the seal, and parses the body into `into`.
  Opened open(std::string_view frame, wire::Message& into) const;

  // As open(), with the message built on `arena`: for the collector, which
  // opens ~10,000 frames a second; a result batch's dozens of strings and
  // submessages then cost the arena's blocks instead of one heap allocation
  // and free each.
  OpenedOnArena open_on(std::string_view frame, google::protobuf::Arena& arena) const;

 private:
  struct Key {
    Sealer sealer;
    bool retired = false;
  };
  // Parses the outer frame into `frame` and verifies its seal.
  Opened check_seal(std::string_view bytes, wire::Sealed& frame) const;

  std::map<std::string, std::vector<Key>, std::less<>> keys_;  // each node's by id, highest first
};

// Opens a frame that must be sealed by `node` under `key` (the same key id).
Result<wire::Message> open_from(std::string_view frame, const std::string& node, const Sealer& key);

// Opens an unsealed Hello frame.
Result<wire::Message> open_hello(std::string_view frame);

}  // namespace flexmon
