#include "common/seal.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "wire.pb.h"

namespace flexmon {
namespace {

const std::string kKeyN1(32, '\x11');
const std::string kKeyN2(32, '\x22');

wire::Message heartbeat_from(const std::string& node) {
  wire::Message message;
  message.set_node(node);
  message.set_counter(7);
  message.mutable_heartbeat()->set_streams(3);
  return message;
}

KeyRing ring() {
  KeyRing keys;
  keys.add("n1", kKeyN1);
  keys.add("n2", kKeyN2);
  return keys;
}

TEST(Seal, KnownAnswerHmacSha256) {
  // RFC 4231, test case 2.
  Sealer sealer("Jefe");
  auto mac = sealer.mac("what do ya want for nothing?");
  std::string hex;
  for (auto byte : mac) hex += fmt::format("{:02x}", byte);
  EXPECT_EQ(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Seal, RoundTrip) {
  std::string frame = seal(heartbeat_from("n1"), Sealer(kKeyN1));
  auto opened = ring().open(frame);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(opened->node(), "n1");
  EXPECT_EQ(opened->heartbeat().streams(), 3u);
}

TEST(Seal, EveryFlippedBitIsRejected) {
  std::string frame = seal(heartbeat_from("n1"), Sealer(kKeyN1));
  KeyRing keys = ring();
  for (std::size_t i = 0; i < frame.size() * 8; ++i) {
    std::string tampered = frame;
    tampered[i / 8] = static_cast<char>(tampered[i / 8] ^ (1 << (i % 8)));
    EXPECT_FALSE(keys.open(tampered).ok()) << "bit " << i;
  }
}

TEST(Seal, WrongKeyIsRejected) {
  std::string frame = seal(heartbeat_from("n1"), Sealer(kKeyN2));
  auto opened = ring().open(frame);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().message, "seal of node 'n1' does not verify");
}

TEST(Seal, UnknownNodeIsRejected) {
  auto opened = ring().open(seal(heartbeat_from("n9"), Sealer(kKeyN1)));
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().message, "unknown node 'n9'");
}

TEST(Seal, BodyMustNameTheSealingNode) {
  // n2 seals a body that claims to come from n1 under its own name.
  wire::Message message = heartbeat_from("n1");
  wire::Sealed frame;
  frame.set_version(kWireVersion);
  frame.set_node("n2");
  message.SerializeToString(frame.mutable_body());
  auto mac = Sealer(kKeyN2).mac(frame.body());
  frame.set_mac(mac.data(), mac.size());
  auto opened = ring().open(frame.SerializeAsString());
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().message, "body names node 'n1' but the frame is sealed for 'n2'");
}

TEST(Seal, TruncatedAndGarbageFramesAreRejected) {
  std::string frame = seal(heartbeat_from("n1"), Sealer(kKeyN1));
  KeyRing keys = ring();
  for (std::size_t length = 0; length < frame.size(); ++length)
    EXPECT_FALSE(keys.open(frame.substr(0, length)).ok()) << length;
  EXPECT_FALSE(keys.open(std::string(200, '\xff')).ok());
  EXPECT_EQ(keys.open("").error().message, "empty frame");
}

TEST(Seal, OtherVersionIsRejected) {
  wire::Sealed frame;
  frame.ParseFromString(seal(heartbeat_from("n1"), Sealer(kKeyN1)));
  frame.set_version(2);
  auto opened = ring().open(frame.SerializeAsString());
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().message, "wire version 2 is not supported (this side speaks 1)");
}

TEST(Seal, OpenFromChecksTheExpectedNode) {
  std::string frame = seal(heartbeat_from("n1"), Sealer(kKeyN1));
  EXPECT_TRUE(open_from(frame, "n1", Sealer(kKeyN1)).ok());
  EXPECT_FALSE(open_from(frame, "n2", Sealer(kKeyN1)).ok());
}

TEST(Seal, HelloIsUnsealedAndOnlyHello) {
  wire::Message hello;
  hello.mutable_hello()->set_session(std::string(16, 'x'));
  auto opened = open_hello(unsealed_frame(hello));
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(opened->hello().session(), std::string(16, 'x'));
  EXPECT_FALSE(open_hello(unsealed_frame(heartbeat_from(""))).ok());
  EXPECT_FALSE(open_hello(seal(heartbeat_from("n1"), Sealer(kKeyN1))).ok());
}

// open_on, the collector's path, opens what open does, on the arena, and
// names each kind of refusal.
TEST(Seal, OpenOnAnArenaNamesTheFault) {
  KeyRing keys = ring();
  google::protobuf::Arena arena;
  std::string frame = seal(heartbeat_from("n1"), Sealer(kKeyN1));
  auto opened = keys.open_on(frame, arena);
  ASSERT_EQ(opened.fault, OpenFault::none) << opened.why;
  ASSERT_NE(opened.message, nullptr);
  EXPECT_EQ(opened.message->GetArena(), &arena);
  EXPECT_EQ(opened.message->SerializeAsString(), keys.open(frame)->SerializeAsString());

  auto truncated = keys.open_on(frame.substr(0, frame.size() - 1), arena);
  EXPECT_EQ(truncated.fault, OpenFault::malformed);
  EXPECT_EQ(truncated.message, nullptr);
  EXPECT_EQ(keys.open_on("", arena).why, "empty frame");

  auto unknown = keys.open_on(seal(heartbeat_from("n9"), Sealer(kKeyN1)), arena);
  EXPECT_EQ(unknown.fault, OpenFault::unknown_node);
  EXPECT_EQ(unknown.why, "unknown node 'n9'");

  auto forged = keys.open_on(seal(heartbeat_from("n1"), Sealer(kKeyN2)), arena);
  EXPECT_EQ(forged.fault, OpenFault::bad_seal);
  EXPECT_EQ(forged.why, "seal of node 'n1' does not verify");

  wire::Sealed other_body;
  other_body.set_version(kWireVersion);
  other_body.set_node("n2");
  heartbeat_from("n1").SerializeToString(other_body.mutable_body());
  auto mac = Sealer(kKeyN2).mac(other_body.body());
  other_body.set_mac(mac.data(), mac.size());
  auto misattributed = keys.open_on(other_body.SerializeAsString(), arena);
  EXPECT_EQ(misattributed.fault, OpenFault::bad_seal);
  EXPECT_EQ(misattributed.message, nullptr);
  EXPECT_EQ(misattributed.why, "body names node 'n1' but the frame is sealed for 'n2'");
}

}  // namespace
}  // namespace flexmon
