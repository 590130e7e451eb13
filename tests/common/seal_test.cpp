#include "common/seal.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/config.h"
#include "wire.pb.h"

namespace flexmon {
namespace {

const std::string kKeyN1(32, '\x11');
const std::string kKeyN2(32, '\x22');
const std::string kNewKeyN1(32, '\x12');

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

// What open() says about a frame: "" when it opens, else the reason.
std::string refusal(const KeyRing& keys, std::string_view frame) {
  wire::Message message;
  auto opened = keys.open(frame, message);
  return opened.ok() ? "" : opened.why;
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
  KeyRing keys = ring();
  wire::Message message;
  auto opened = keys.open(frame, message);
  ASSERT_TRUE(opened.ok()) << opened.why;
  EXPECT_EQ(message.node(), "n1");
  EXPECT_EQ(message.heartbeat().streams(), 3u);
  EXPECT_EQ(opened.key, keys.find("n1"));
}

TEST(Seal, EveryFlippedBitIsRejected) {
  std::string frame = seal(heartbeat_from("n1"), Sealer(kKeyN1));
  KeyRing keys = ring();
  for (std::size_t i = 0; i < frame.size() * 8; ++i) {
    std::string tampered = frame;
    tampered[i / 8] = static_cast<char>(tampered[i / 8] ^ (1 << (i % 8)));
    EXPECT_NE(refusal(keys, tampered), "") << "bit " << i;
  }
}

TEST(Seal, WrongKeyIsRejected) {
  EXPECT_EQ(refusal(ring(), seal(heartbeat_from("n1"), Sealer(kKeyN2))),
            "seal of node 'n1' under key 1 does not verify");
}

TEST(Seal, UnknownNodeIsRejected) {
  EXPECT_EQ(refusal(ring(), seal(heartbeat_from("n9"), Sealer(kKeyN1))), "unknown node 'n9'");
}

// A node name that is not UTF-8 is an unknown node, not a protobuf parse
// error: with `string` fields protobuf refused the frame and wrote its own
// "invalid UTF-8" line to stderr for each datagram, unlimited.
TEST(Seal, ANodeNameThatIsNotUtf8IsAnUnknownNode) {
  wire::Message message = heartbeat_from("n\xff\xfe");
  EXPECT_EQ(refusal(ring(), seal(message, Sealer(kKeyN1))), "unknown node 'n\\xff\\xfe'");
}

// Item 9 of issue 14: a node name is outside bytes until the seal verifies;
// a newline in it must not start a forged log line.
TEST(Seal, OutsideBytesInTheReasonAreEscaped) {
  EXPECT_EQ(
      refusal(ring(), seal(heartbeat_from("n9\n2026-12-04 manager info: forged"), Sealer(kKeyN1))),
      "unknown node 'n9\\x0a2026-12-04 manager info: forged'");
  auto why = open_from(seal(heartbeat_from("n1\r\nx"), Sealer(kKeyN1)), "n1", Sealer(kKeyN1));
  ASSERT_FALSE(why.ok());
  EXPECT_EQ(why.error().message, "frame from node 'n1\\x0d\\x0ax', expected 'n1'");
}

TEST(Seal, BodyMustNameTheSealingNode) {
  // n2 seals a body that claims to come from n1 under its own name.
  wire::Message message = heartbeat_from("n1");
  wire::Sealed frame;
  frame.set_version(kWireVersion);
  frame.set_node("n2");
  frame.set_key_id(1);
  message.SerializeToString(frame.mutable_body());
  auto mac = Sealer(kKeyN2).mac(frame.body());
  frame.set_mac(mac.data(), mac.size());
  EXPECT_EQ(refusal(ring(), frame.SerializeAsString()),
            "body names node 'n1' but the frame is sealed for 'n2'");
}

TEST(Seal, TruncatedAndGarbageFramesAreRejected) {
  std::string frame = seal(heartbeat_from("n1"), Sealer(kKeyN1));
  KeyRing keys = ring();
  for (std::size_t length = 0; length < frame.size(); ++length)
    EXPECT_NE(refusal(keys, frame.substr(0, length)), "") << length;
  EXPECT_NE(refusal(keys, std::string(200, '\xff')), "");
  EXPECT_EQ(refusal(keys, ""), "empty frame");
}

TEST(Seal, OtherVersionIsRejected) {
  wire::Sealed frame;
  frame.ParseFromString(seal(heartbeat_from("n1"), Sealer(kKeyN1)));
  frame.set_version(1);  // before key ids
  EXPECT_EQ(refusal(ring(), frame.SerializeAsString()),
            "wire version 1 is not supported (this side speaks 2)");
}

TEST(Seal, OpenFromChecksTheExpectedNodeAndKey) {
  std::string frame = seal(heartbeat_from("n1"), Sealer(kKeyN1));
  EXPECT_TRUE(open_from(frame, "n1", Sealer(kKeyN1)).ok());
  EXPECT_FALSE(open_from(frame, "n2", Sealer(kKeyN1)).ok());
  auto other_id = open_from(frame, "n1", Sealer(kKeyN1, 2));
  ASSERT_FALSE(other_id.ok());
  EXPECT_EQ(other_id.error().message, "frame of node 'n1' under key 1, expected key 2");
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

TEST(Seal, EveryFrameNamesItsKeyId) {
  wire::Sealed frame;
  ASSERT_TRUE(frame.ParseFromString(seal(heartbeat_from("n1"), Sealer(kKeyN1, 7))));
  EXPECT_EQ(frame.key_id(), 7u);
  ASSERT_TRUE(frame.ParseFromString(seal(heartbeat_from("n1"), Sealer(kKeyN1))));
  EXPECT_EQ(frame.key_id(), kDefaultKeyId);
}

// During a rotation a node has two active keys: a frame under either opens,
// and open() names the key that verified it (replies are sealed under it).
TEST(KeyRotation, EitherActiveKeyOpensAndTheNewestSeals) {
  KeyRing keys;
  keys.add("n1", kKeyN1, 1);
  keys.add("n1", kNewKeyN1, 2);
  ASSERT_NE(keys.find("n1"), nullptr);
  EXPECT_EQ(keys.find("n1")->id(), 2u);
  for (auto [key, id] : {std::pair{kKeyN1, 1u}, std::pair{kNewKeyN1, 2u}}) {
    wire::Message message;
    auto opened = keys.open(seal(heartbeat_from("n1"), Sealer(key, id)), message);
    ASSERT_TRUE(opened.ok()) << opened.why;
    EXPECT_EQ(opened.key->id(), id);
  }
  // Key 2's bytes under key 1's id: the MAC does not verify.
  EXPECT_EQ(refusal(keys, seal(heartbeat_from("n1"), Sealer(kNewKeyN1, 1))),
            "seal of node 'n1' under key 1 does not verify");
  EXPECT_EQ(refusal(keys, seal(heartbeat_from("n1"), Sealer(kKeyN1, 3))), "node 'n1' has no key 3");
  EXPECT_THROW(keys.add("n1", kKeyN2, 2), std::invalid_argument);
}

// A retired key opens nothing; a frame that verifies under it is told from a
// forgery that claims its id.
TEST(KeyRotation, RetiredKeyIsRefusedWithItsOwnFault) {
  KeyRing keys;
  keys.add("n1", kNewKeyN1, 2);
  keys.add("n1", kKeyN1, 1, true);
  EXPECT_EQ(keys.find("n1")->id(), 2u);
  google::protobuf::Arena arena;
  auto retired = keys.open_on(seal(heartbeat_from("n1"), Sealer(kKeyN1, 1)), arena);
  EXPECT_EQ(retired.fault, OpenFault::retired_key);
  EXPECT_EQ(retired.message, nullptr);
  EXPECT_EQ(retired.key, nullptr);
  EXPECT_EQ(retired.why, "node 'n1' sealed with key 1, which is retired");
  auto forged = keys.open_on(seal(heartbeat_from("n1"), Sealer(kKeyN2, 1)), arena);
  EXPECT_EQ(forged.fault, OpenFault::bad_seal);
  auto unknown = keys.open_on(seal(heartbeat_from("n1"), Sealer(kKeyN1, 9)), arena);
  EXPECT_EQ(unknown.fault, OpenFault::unknown_key);
  EXPECT_EQ(keys.open_on(seal(heartbeat_from("n1"), Sealer(kNewKeyN1, 2)), arena).fault,
            OpenFault::none);
}

TEST(KeyRotation, RingFromConfigHoldsEveryKeyOfTheNode) {
  NodeConfig node;
  node.id = "n1";
  node.keys = {NodeKey{2, kNewKeyN1, false}, NodeKey{1, kKeyN1, true}};
  node.key = kNewKeyN1;
  node.key_id = 2;
  KeyRing keys;
  keys.add(node);
  EXPECT_EQ(keys.find("n1")->id(), 2u);
  EXPECT_EQ(refusal(keys, seal(heartbeat_from("n1"), Sealer(kKeyN1, 1))),
            "node 'n1' sealed with key 1, which is retired");
  NodeConfig built_in_code{"n2", "s", "127.0.0.2", 0, kKeyN2};
  keys.add(built_in_code);
  EXPECT_EQ(refusal(keys, seal(heartbeat_from("n2"), Sealer(kKeyN2))), "");
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
  wire::Message on_heap;
  ASSERT_TRUE(keys.open(frame, on_heap).ok());
  EXPECT_EQ(opened.message->SerializeAsString(), on_heap.SerializeAsString());

  auto truncated = keys.open_on(frame.substr(0, frame.size() - 1), arena);
  EXPECT_EQ(truncated.fault, OpenFault::malformed);
  EXPECT_EQ(truncated.message, nullptr);
  EXPECT_EQ(keys.open_on("", arena).why, "empty frame");

  auto unknown = keys.open_on(seal(heartbeat_from("n9"), Sealer(kKeyN1)), arena);
  EXPECT_EQ(unknown.fault, OpenFault::unknown_node);
  EXPECT_EQ(unknown.why, "unknown node 'n9'");

  auto forged = keys.open_on(seal(heartbeat_from("n1"), Sealer(kKeyN2)), arena);
  EXPECT_EQ(forged.fault, OpenFault::bad_seal);
  EXPECT_EQ(forged.why, "seal of node 'n1' under key 1 does not verify");

  wire::Sealed other_body;
  other_body.set_version(kWireVersion);
  other_body.set_node("n2");
  other_body.set_key_id(1);
  heartbeat_from("n1").SerializeToString(other_body.mutable_body());
  auto mac = Sealer(kKeyN2).mac(other_body.body());
  other_body.set_mac(mac.data(), mac.size());
  auto misattributed = keys.open_on(other_body.SerializeAsString(), arena);
  EXPECT_EQ(misattributed.fault, OpenFault::bad_seal);
  EXPECT_EQ(misattributed.message, nullptr);
  EXPECT_EQ(misattributed.why, "body names node 'n1' but the frame is sealed for 'n2'");
}

// nodes[].keys in the config: what a rotation writes, and what it may not.
std::string node_with(const std::string& keys) {
  return "nodes:\n  - id: n1\n    site: s\n    address: 127.0.0.1\n" + keys;
}

std::string config_error(const std::string& text) {
  try {
    parse_config(text, "test.yaml", ".");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

const char* kHexA = "00112233445566778899aabbccddeeff";
const char* kHexB = "ffeeddccbbaa99887766554433221100";

TEST(KeyRotationConfig, SingleKeyIsKeyOne) {
  Config c = parse_config(node_with(std::string("    key: ") + kHexA + "\n"), "test.yaml", ".");
  ASSERT_EQ(c.nodes[0].keys.size(), 1u);
  EXPECT_EQ(c.nodes[0].key_id, 1u);
  EXPECT_EQ(c.nodes[0].keys[0].id, 1u);
  EXPECT_EQ(c.nodes[0].key, c.nodes[0].keys[0].key);
}

TEST(KeyRotationConfig, NodeSealsWithItsNewestActiveKey) {
  Config c = parse_config(node_with(std::string("    keys:\n      - {id: 1, key: ") + kHexA +
                                    "}\n      - {id: 2, key: " + kHexB + "}\n"),
                          "test.yaml", ".");
  EXPECT_EQ(c.nodes[0].key_id, 2u);
  ASSERT_EQ(c.nodes[0].keys.size(), 2u);
  EXPECT_EQ(c.nodes[0].keys[0].id, 2u) << "highest id first";
  EXPECT_FALSE(c.nodes[0].keys[1].retired);
  // Key 2 retired (a rotation rolled back): key 1 seals.
  c = parse_config(node_with(std::string("    keys:\n      - {id: 1, key: ") + kHexA +
                             "}\n      - {id: 2, key: " + kHexB + ", retired: true}\n"),
                   "test.yaml", ".");
  EXPECT_EQ(c.nodes[0].key_id, 1u);
  KeyRing ring;
  ring.add(c.nodes[0]);
  EXPECT_EQ(ring.find("n1")->id(), 1u);
}

TEST(KeyRotationConfig, RefusesWhatCannotWork) {
  auto keys = [](const std::string& items) { return node_with("    keys:\n" + items); };
  const std::string a = std::string("{id: 1, key: ") + kHexA;
  EXPECT_EQ(config_error(node_with("")),
            "test.yaml:2: nodes[0].key: required key is missing (or keys)");
  EXPECT_EQ(config_error(
                node_with(std::string("    key: ") + kHexA + "\n    keys:\n      - " + a + "}\n")),
            "test.yaml:7: nodes[0].keys: give key or keys, not both");
  EXPECT_EQ(config_error(keys("      - " + a + ", retired: true}\n")),
            "test.yaml:6: nodes[0].keys: every key is retired: one must be active");
  EXPECT_EQ(config_error(keys("      - " + a + "}\n      - {id: 1, key: " + kHexB + "}\n")),
            "test.yaml:7: nodes[0].keys[1].id: key 1 is given twice");
  EXPECT_EQ(config_error(keys("      - " + a + "}\n      - {id: 2, key: " + kHexA + "}\n")),
            "test.yaml:7: nodes[0].keys[1].key: same bytes as key 1: a new key must be new");
  EXPECT_EQ(config_error(keys(std::string("      - {id: 0, key: ") + kHexA + "}\n")),
            "test.yaml:6: nodes[0].keys[0].id: must be 1 to 4294967295");
  EXPECT_EQ(config_error(keys("      - " + a + ", colour: red}\n")),
            "test.yaml:6: nodes[0].keys[0].colour: unknown key");
  EXPECT_EQ(config_error(node_with("    keys: []\n")),
            "test.yaml:5: nodes[0].keys: needs at least one key");
}

}  // namespace
}  // namespace flexmon
