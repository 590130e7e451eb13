// The dedupe window (storage/seq_window.h): what it classifies and how it is
// stored.
#include "storage/seq_window.h"

#include <gtest/gtest.h>

#include <string>

#include "common/wire_limits.h"

namespace flexmon {
namespace {

TEST(SeqWindow, ClassifiesFoldsAndRoundTrips) {
  SeqWindow w;
  EXPECT_EQ(w.classify(1), SeqWindow::Verdict::fresh);
  w.add(3);
  w.add(5);
  EXPECT_EQ(w.classify(3), SeqWindow::Verdict::duplicate);
  EXPECT_EQ(w.classify(4), SeqWindow::Verdict::fresh);
  EXPECT_EQ(w.high_water(), 0u);
  w.add(1);
  w.add(2);
  EXPECT_EQ(w.high_water(), 3u) << "1..3 fold into the high-water mark";
  w.add(4);
  EXPECT_EQ(w.high_water(), 5u);
  EXPECT_TRUE(w.above().empty());
  EXPECT_EQ(w.classify(5 + kSeqWindow), SeqWindow::Verdict::fresh);
  EXPECT_EQ(w.classify(6 + kSeqWindow), SeqWindow::Verdict::outside);
  w.add(9);
  w.add(10);
  w.add(20);
  SeqWindow back;
  ASSERT_TRUE(SeqWindow::decode(w.high_water(), w.encode_above(), back));
  EXPECT_EQ(back.above(), w.above());
  EXPECT_EQ(back.classify(10), SeqWindow::Verdict::duplicate);
  EXPECT_FALSE(SeqWindow::decode(0, std::string("\x80", 1), back)) << "truncated varint";
}

}  // namespace
}  // namespace flexmon
