#include "common/framing.h"

#include <gtest/gtest.h>

#include <cstring>

namespace flexmon {
namespace {

TEST(Framing, LengthRoundTrip) {
  std::string framed = length_prefixed(std::string(300, 'a'));
  ASSERT_EQ(framed.size(), 304u);
  std::uint8_t header[kFrameHeaderBytes];
  std::memcpy(header, framed.data(), kFrameHeaderBytes);
  auto length = frame_length(header);
  ASSERT_TRUE(length.ok());
  EXPECT_EQ(*length, 300u);
}

TEST(Framing, RejectsEmptyAndOversized) {
  std::uint8_t zero[kFrameHeaderBytes] = {0, 0, 0, 0};
  EXPECT_FALSE(frame_length(zero).ok());
  std::uint8_t huge[kFrameHeaderBytes] = {0xff, 0xff, 0xff, 0xff};
  auto length = frame_length(huge);
  ASSERT_FALSE(length.ok());
  EXPECT_EQ(length.error().message,
            "control frame of 4294967295 bytes exceeds the limit of 1048576");
}

}  // namespace
}  // namespace flexmon
