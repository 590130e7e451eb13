#include "prober/probe_packet.h"

#include <gtest/gtest.h>

#include <vector>

namespace flexmon::prober {
namespace {

std::span<const std::uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

TEST(ProbePacket, RoundTrips) {
  ProbeHeader h{ProbeKind::request, 42, 0x0123456789abcdefULL};
  auto packet = encode_probe(h, 64);
  ASSERT_EQ(packet.size(), 64u);
  auto decoded = decode_probe(bytes(packet));
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->kind, ProbeKind::request);
  EXPECT_EQ(decoded->index, 42);
  EXPECT_EQ(decoded->measurement, 0x0123456789abcdefULL);
}

TEST(ProbePacket, LayoutIsBigEndianWithMagicFirst) {
  auto packet = encode_probe(ProbeHeader{ProbeKind::reply, 0x0102, 0x1122334455667788ULL}, 16);
  std::vector<std::uint8_t> expected = {'F',  'M',  'P',  '1',  1,    2,    0x01, 0x02,
                                        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88};
  EXPECT_EQ(std::vector<std::uint8_t>(packet.begin(), packet.end()), expected);
}

TEST(ProbePacket, PaddingIsZero) {
  auto packet = encode_probe(ProbeHeader{}, 100);
  for (std::size_t i = kProbeHeaderBytes; i < packet.size(); ++i) ASSERT_EQ(packet[i], '\0');
}

TEST(ProbePacket, RejectsMalformedPackets) {
  auto good = encode_probe(ProbeHeader{ProbeKind::request, 1, 7}, 32);
  ASSERT_TRUE(decode_probe(bytes(good)));

  EXPECT_FALSE(decode_probe(bytes(good.substr(0, 15)))) << "shorter than the header";
  EXPECT_FALSE(decode_probe(bytes(""))) << "empty";
  auto bad_magic = good;
  bad_magic[0] = 'X';
  EXPECT_FALSE(decode_probe(bytes(bad_magic)));
  auto bad_version = good;
  bad_version[4] = 2;
  EXPECT_FALSE(decode_probe(bytes(bad_version)));
  auto bad_kind = good;
  bad_kind[5] = 3;
  EXPECT_FALSE(decode_probe(bytes(bad_kind)));
  bad_kind[5] = 0;
  EXPECT_FALSE(decode_probe(bytes(bad_kind)));
  EXPECT_FALSE(decode_probe(bytes(good), 64, 1472)) << "below the minimum size";
  EXPECT_FALSE(decode_probe(bytes(good), 16, 31)) << "above the maximum size";
  EXPECT_TRUE(decode_probe(bytes(good), 32, 32));
}

}  // namespace
}  // namespace flexmon::prober
