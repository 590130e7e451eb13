#include "common/seal.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

#include "common/config.h"
#include "common/log.h"
#include "wire.pb.h"

namespace flexmon {

struct Sealer::Impl {
  // A context initialised with the key; each MAC works on a duplicate, so the
  // key schedule is computed once and concurrent callers do not share state.
  EVP_MAC_CTX* keyed = nullptr;
  ~Impl() { EVP_MAC_CTX_free(keyed); }
};

Sealer::Sealer(std::string_view key, std::uint32_t id) : impl_(std::make_unique<Impl>()), id_(id) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (!mac) throw std::runtime_error("OpenSSL: HMAC is not available");
  impl_->keyed = EVP_MAC_CTX_new(mac);
  EVP_MAC_free(mac);
  if (!impl_->keyed) throw std::runtime_error("OpenSSL: cannot create an HMAC context");
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  if (EVP_MAC_init(impl_->keyed, reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                   params) != 1)
    throw std::runtime_error("OpenSSL: cannot key HMAC-SHA256");
}

Sealer::~Sealer() = default;
Sealer::Sealer(Sealer&&) noexcept = default;
Sealer& Sealer::operator=(Sealer&&) noexcept = default;

std::array<std::uint8_t, kMacBytes> Sealer::mac(std::string_view data) const {
  std::array<std::uint8_t, kMacBytes> out{};
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_dup(impl_->keyed);
  if (!ctx) throw std::runtime_error("OpenSSL: cannot duplicate an HMAC context");
  std::size_t length = 0;
  bool ok =
      EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1 &&
      EVP_MAC_final(ctx, out.data(), &length, out.size()) == 1 && length == out.size();
  EVP_MAC_CTX_free(ctx);
  if (!ok) throw std::runtime_error("OpenSSL: HMAC-SHA256 failed");
  return out;
}

bool Sealer::verify(std::string_view data, std::string_view mac) const {
  if (mac.size() != kMacBytes) return false;
  auto expected = this->mac(data);
  return CRYPTO_memcmp(expected.data(), mac.data(), kMacBytes) == 0;
}

std::string seal(const wire::Message& message, const Sealer& key) {
  if (message.node().empty()) throw std::logic_error("seal: message has no node");
  wire::Sealed frame;
  frame.set_version(kWireVersion);
  frame.set_node(message.node());
  frame.set_key_id(key.id());
  message.SerializeToString(frame.mutable_body());
  auto mac = key.mac(frame.body());
  frame.set_mac(mac.data(), mac.size());
  return frame.SerializeAsString();
}

std::string unsealed_frame(const wire::Message& message) {
  wire::Sealed frame;
  frame.set_version(kWireVersion);
  message.SerializeToString(frame.mutable_body());
  return frame.SerializeAsString();
}

namespace {

// Parses the outer frame and checks its version; the reason when it fails.
std::string parse_outer(std::string_view bytes, wire::Sealed& frame) {
  if (bytes.empty()) return "empty frame";
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return fmt::format("malformed frame ({} bytes)", bytes.size());
  if (frame.version() != kWireVersion)
    return fmt::format("wire version {} is not supported (this side speaks {})", frame.version(),
                       kWireVersion);
  return {};
}

// Parses the body into `message`; the reason when it is not the message of
// the frame's node, else empty.
std::string parse_body_into(const wire::Sealed& frame, wire::Message& message) {
  if (!message.ParseFromString(frame.body())) return "malformed message body";
  if (message.node() != frame.node())
    return fmt::format("body names node '{}' but the frame is sealed for '{}'",
                       escaped(message.node(), 64), escaped(frame.node(), 64));
  return {};
}

}  // namespace

Result<wire::Message> open_from(std::string_view bytes, const std::string& node,
                                const Sealer& key) {
  wire::Sealed frame;
  if (auto why = parse_outer(bytes, frame); !why.empty())
    return fail(ErrorCode::kInvalidInput, std::move(why));
  if (frame.node() != node)
    return fail(ErrorCode::kInvalidInput,
                fmt::format("frame from node '{}', expected '{}'", escaped(frame.node(), 64),
                            escaped(node, 64)));
  if (frame.key_id() != key.id())
    return fail(ErrorCode::kDenied, fmt::format("frame of node '{}' under key {}, expected key {}",
                                                escaped(node, 64), frame.key_id(), key.id()));
  if (!key.verify(frame.body(), frame.mac()))
    return fail(ErrorCode::kDenied,
                fmt::format("seal of node '{}' does not verify", escaped(node, 64)));
  wire::Message message;
  if (auto why = parse_body_into(frame, message); !why.empty())
    return fail(ErrorCode::kInvalidInput, std::move(why));
  return message;
}

Result<wire::Message> open_hello(std::string_view bytes) {
  wire::Sealed frame;
  if (auto why = parse_outer(bytes, frame); !why.empty())
    return fail(ErrorCode::kInvalidInput, std::move(why));
  if (!frame.node().empty() || !frame.mac().empty() || frame.key_id() != 0)
    return fail(ErrorCode::kInvalidInput, "expected an unsealed hello");
  wire::Message message;
  if (auto why = parse_body_into(frame, message); !why.empty())
    return fail(ErrorCode::kInvalidInput, std::move(why));
  if (!message.has_hello()) return fail(ErrorCode::kInvalidInput, "expected a hello");
  return message;
}

void KeyRing::add(const std::string& node, std::string_view key, std::uint32_t id, bool retired) {
  auto& keys = keys_[node];
  auto at =
      std::find_if(keys.begin(), keys.end(), [&](const Key& k) { return k.sealer.id() <= id; });
  if (at != keys.end() && at->sealer.id() == id)
    throw std::invalid_argument(fmt::format("node '{}' has key {} twice", node, id));
  keys.insert(at, Key{Sealer(key, id), retired});
}

void KeyRing::add(const NodeConfig& node) {
  for (const auto& k : node.all_keys()) add(node.id, k.key, k.id, k.retired);
}

const Sealer* KeyRing::find(const std::string& node) const {
  auto it = keys_.find(node);
  if (it == keys_.end()) return nullptr;
  for (const auto& k : it->second)
    if (!k.retired) return &k.sealer;
  return nullptr;
}

Opened KeyRing::check_seal(std::string_view bytes, wire::Sealed& frame) const {
  Opened out;
  out.why = parse_outer(bytes, frame);
  if (!out.why.empty()) {
    out.fault = OpenFault::malformed;
    return out;
  }
  auto node = keys_.find(frame.node());
  if (node == keys_.end()) {
    out.fault = OpenFault::unknown_node;
    out.why = fmt::format("unknown node '{}'", escaped(frame.node(), 64));
    return out;
  }
  auto key = std::find_if(node->second.begin(), node->second.end(),
                          [&](const Key& k) { return k.sealer.id() == frame.key_id(); });
  if (key == node->second.end()) {
    out.fault = OpenFault::unknown_key;
    out.why = fmt::format("node '{}' has no key {}", node->first, frame.key_id());
    return out;
  }
  // A retired key is still verified: a frame that verifies comes from a node
  // not yet told of its new key (retired_key), one that does not is forged.
  if (!key->sealer.verify(frame.body(), frame.mac())) {
    out.fault = OpenFault::bad_seal;
    out.why =
        fmt::format("seal of node '{}' under key {} does not verify", node->first, frame.key_id());
    return out;
  }
  if (key->retired) {
    out.fault = OpenFault::retired_key;
    out.why =
        fmt::format("node '{}' sealed with key {}, which is retired", node->first, frame.key_id());
    return out;
  }
  out.key = &key->sealer;
  return out;
}

Opened KeyRing::open(std::string_view bytes, wire::Message& into) const {
  wire::Sealed frame;
  Opened out = check_seal(bytes, frame);
  if (!out.ok()) return out;
  out.why = parse_body_into(frame, into);
  if (!out.why.empty()) {
    out.fault = OpenFault::bad_seal;
    out.key = nullptr;
  }
  return out;
}

OpenedOnArena KeyRing::open_on(std::string_view bytes, google::protobuf::Arena& arena) const {
  OpenedOnArena out;
  wire::Sealed frame;
  static_cast<Opened&>(out) = check_seal(bytes, frame);
  if (!out.ok()) return out;
  auto* message = google::protobuf::Arena::CreateMessage<wire::Message>(&arena);
  out.why = parse_body_into(frame, *message);
  if (!out.why.empty()) {
    out.fault = OpenFault::bad_seal;
    out.key = nullptr;
  } else {
    out.message = message;
  }
  return out;
}

}  // namespace flexmon
