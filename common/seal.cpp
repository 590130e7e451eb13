#include "common/seal.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <stdexcept>

#include <fmt/format.h>

#include "wire.pb.h"

namespace flexmon {

struct Sealer::Impl {
  // A context initialised with the key; each MAC works on a duplicate, so the
  // key schedule is computed once and concurrent callers do not share state.
  EVP_MAC_CTX* keyed = nullptr;
  ~Impl() { EVP_MAC_CTX_free(keyed); }
};

Sealer::Sealer(std::string_view key) : impl_(std::make_unique<Impl>()) {
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

Result<wire::Sealed> parse_outer(std::string_view bytes) {
  wire::Sealed frame;
  if (bytes.empty()) return fail("empty frame");
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return fail(fmt::format("malformed frame ({} bytes)", bytes.size()));
  if (frame.version() != kWireVersion)
    return fail(fmt::format("wire version {} is not supported (this side speaks {})",
                            frame.version(), kWireVersion));
  return frame;
}

// Parses the body into `message`; the reason when it is not the message of
// the frame's node, else empty.
std::string parse_body_into(const wire::Sealed& frame, wire::Message& message) {
  if (!message.ParseFromString(frame.body())) return "malformed message body";
  if (message.node() != frame.node())
    return fmt::format("body names node '{}' but the frame is sealed for '{}'", message.node(),
                       frame.node());
  return {};
}

Result<wire::Message> parse_body(const wire::Sealed& frame) {
  wire::Message message;
  if (auto why = parse_body_into(frame, message); !why.empty()) return fail(std::move(why));
  return message;
}

// Parses the outer frame and verifies its seal under its node's key.
OpenFault check_seal(const KeyRing& keys, std::string_view bytes, Result<wire::Sealed>& frame,
                     std::string& why) {
  frame = parse_outer(bytes);
  if (!frame) {
    why = frame.error().message;
    return OpenFault::malformed;
  }
  const Sealer* key = keys.find(frame->node());
  if (!key) {
    why = fmt::format("unknown node '{}'", frame->node().substr(0, 64));
    return OpenFault::unknown_node;
  }
  if (!key->verify(frame->body(), frame->mac())) {
    why = fmt::format("seal of node '{}' does not verify", frame->node().substr(0, 64));
    return OpenFault::bad_seal;
  }
  return OpenFault::none;
}

}  // namespace

Result<wire::Message> open_from(std::string_view bytes, const std::string& node,
                                const Sealer& key) {
  auto frame = parse_outer(bytes);
  if (!frame) return frame.error();
  if (frame->node() != node)
    return fail(fmt::format("frame from node '{}', expected '{}'", frame->node(), node));
  if (!key.verify(frame->body(), frame->mac()))
    return fail(fmt::format("seal of node '{}' does not verify", node));
  return parse_body(*frame);
}

Result<wire::Message> open_hello(std::string_view bytes) {
  auto frame = parse_outer(bytes);
  if (!frame) return frame.error();
  if (!frame->node().empty() || !frame->mac().empty()) return fail("expected an unsealed hello");
  auto message = parse_body(*frame);
  if (!message) return message;
  if (!message->has_hello()) return fail("expected a hello");
  return message;
}

void KeyRing::add(const std::string& node, std::string_view key) {
  keys_.insert_or_assign(node, Sealer(key));
}

const Sealer* KeyRing::find(const std::string& node) const {
  auto it = keys_.find(node);
  return it == keys_.end() ? nullptr : &it->second;
}

Result<wire::Message> KeyRing::open(std::string_view bytes) const {
  Result<wire::Sealed> frame = fail("not parsed");
  std::string why;
  if (check_seal(*this, bytes, frame, why) != OpenFault::none) return fail(std::move(why));
  return parse_body(*frame);
}

OpenedOnArena KeyRing::open_on(std::string_view bytes, google::protobuf::Arena& arena) const {
  OpenedOnArena out;
  Result<wire::Sealed> frame = fail("not parsed");
  out.fault = check_seal(*this, bytes, frame, out.why);
  if (out.fault != OpenFault::none) return out;
  auto* message = google::protobuf::Arena::CreateMessage<wire::Message>(&arena);
  out.why = parse_body_into(*frame, *message);
  if (!out.why.empty())
    out.fault = OpenFault::bad_seal;
  else
    out.message = message;
  return out;
}

}  // namespace flexmon
