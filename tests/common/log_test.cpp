// escaped() and RateLimitedLog: what keeps outside bytes from forging or
// flooding log lines.
#include "common/log.h"

#include <gtest/gtest.h>

#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

namespace flexmon {
namespace {

TEST(Escaped, KeepsPrintableAsciiAndEscapesTheRest) {
  EXPECT_EQ(escaped("n1.site-a_2"), "n1.site-a_2");
  EXPECT_EQ(escaped("n1\n2026-12-04T00:00:00Z manager info: forged"),
            "n1\\x0a2026-12-04T00:00:00Z manager info: forged");
  EXPECT_EQ(escaped(std::string_view("a\0b\r\x7f\xff\\", 7)), "a\\x00b\\x0d\\x7f\\xff\\x5c");
}

TEST(Escaped, CutsLongTextAndSaysHowMuch) {
  EXPECT_EQ(escaped(std::string(200, 'x'), 4), "xxxx...(196 more bytes)");
}

TEST(RateLimitedLog, WritesABurstThenCountsTheRest) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto log = std::make_shared<spdlog::logger>("rate_limited_test", sink);
  RateLimitedLog limited(log, 3, std::chrono::seconds(3600));
  for (int i = 0; i < 1000; ++i) limited.warn("bad input {}", i);
  const std::string text = out.str();
  EXPECT_NE(text.find("bad input 2"), std::string::npos);
  EXPECT_EQ(text.find("bad input 3"), std::string::npos);
  EXPECT_EQ(limited.suppressed_total(), 997u);
}

}  // namespace
}  // namespace flexmon
