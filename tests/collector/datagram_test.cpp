// The collector's datagram decoding: why a datagram is refused, which keys
// verify it, and that reasons escape outside bytes.
#include "collector/datagram.h"

#include <gtest/gtest.h>

#include "collector/collector.h"
#include "common/seal.h"
#include "common/sqlite.h"
#include "prober/result_sender.h"
#include "test_util.h"
#include "wire.pb.h"

namespace flexmon {
namespace {

TEST(DecodeResultDatagram, NamesTheReason) {
  KeyRing keys;
  keys.add("n1", "key-of-node-n1-0123456789abcdef");
  wire::Message m;
  m.set_node("n1");
  m.mutable_results()->set_boot_epoch(1);
  auto* r = m.mutable_results()->add_results();
  r->set_seq(1);
  r->set_src("n1");
  auto good = seal(m, Sealer("key-of-node-n1-0123456789abcdef"));
  EXPECT_EQ(decode_result_datagram(good, keys).reject, DatagramReject::none);
  EXPECT_EQ(decode_result_datagram(good.substr(0, good.size() - 3), keys).reject,
            DatagramReject::malformed);
  EXPECT_EQ(decode_result_datagram(seal(m, Sealer("another key of sixteen bytes")), keys).reject,
            DatagramReject::bad_seal);
  r->set_src("n2");
  auto other = decode_result_datagram(seal(m, Sealer("key-of-node-n1-0123456789abcdef")), keys);
  EXPECT_EQ(other.reject, DatagramReject::bad_results);
  EXPECT_FALSE(other.message);
}

// Key rotation: either active key opens a datagram and is named (acks go
// out under it); a retired key and an unknown key id are reasons of their own.
TEST(DecodeResultDatagram, KnowsEachKeyOfTheNode) {
  const std::string old_key = "key-of-node-n1-0123456789abcdef";
  const std::string new_key = "new-key-of-n1-0123456789abcdef";
  wire::Message m;
  m.set_node("n1");
  m.mutable_results()->set_boot_epoch(1);
  auto* r = m.mutable_results()->add_results();
  r->set_seq(1);
  r->set_src("n1");
  KeyRing both;
  both.add("n1", old_key, 1);
  both.add("n1", new_key, 2);
  auto under_old = decode_result_datagram(seal(m, Sealer(old_key, 1)), both);
  ASSERT_EQ(under_old.reject, DatagramReject::none) << under_old.why;
  EXPECT_EQ(under_old.key->id(), 1u);
  auto under_new = decode_result_datagram(seal(m, Sealer(new_key, 2)), both);
  ASSERT_EQ(under_new.reject, DatagramReject::none) << under_new.why;
  EXPECT_EQ(under_new.key->id(), 2u);

  KeyRing retired;
  retired.add("n1", new_key, 2);
  retired.add("n1", old_key, 1, true);
  auto refused = decode_result_datagram(seal(m, Sealer(old_key, 1)), retired);
  EXPECT_EQ(refused.reject, DatagramReject::retired_key);
  EXPECT_FALSE(refused.message);
  EXPECT_EQ(decode_result_datagram(seal(m, Sealer(new_key, 5)), retired).reject,
            DatagramReject::unknown_key);
}

TEST(DecodeResultDatagram, ReasonsEscapeOutsideBytes) {
  KeyRing keys;
  keys.add("n1", "key-of-node-n1-0123456789abcdef");
  wire::Message m;
  m.set_node("n1\nforged line");
  m.mutable_results()->set_boot_epoch(1);
  auto unknown = decode_result_datagram(seal(m, Sealer("key-of-node-n1-0123456789abcdef")), keys);
  EXPECT_EQ(unknown.reject, DatagramReject::unknown_node);
  EXPECT_EQ(unknown.why, "unknown node 'n1\\x0aforged line'");
  m.set_node("n1");
  auto* r = m.mutable_results()->add_results();
  r->set_seq(1);
  r->set_src("n2\nforged");
  auto bad = decode_result_datagram(seal(m, Sealer("key-of-node-n1-0123456789abcdef")), keys);
  EXPECT_EQ(bad.reject, DatagramReject::bad_results);
  EXPECT_EQ(bad.why, "node 'n1': result 1 has src 'n2\\x0aforged'");
}

}  // namespace
}  // namespace flexmon
