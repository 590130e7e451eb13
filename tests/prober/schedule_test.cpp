#include "prober/schedule.h"

#include <gtest/gtest.h>

#include "prober/stream_runner.h"
#include "wire.pb.h"

namespace flexmon::prober {
namespace {

using std::chrono::milliseconds;

// A fixed origin: the schedule is pure arithmetic on the times it is given.
const MonoTime t0 = MonoTime(std::chrono::hours(1000));

TEST(Schedule, SlotsAreAbsolute) {
  Schedule s(t0 + milliseconds(300), milliseconds(1000));
  EXPECT_EQ(s.slot_time(0), t0 + milliseconds(300));
  EXPECT_EQ(s.slot_time(7), t0 + milliseconds(7300));
  // A million slots later there is still no drift.
  EXPECT_EQ(s.slot_time(1'000'000), t0 + milliseconds(300) + std::chrono::seconds(1'000'000));
}

TEST(Schedule, LateRunDoesNotMoveTheNextSlot) {
  Schedule s(t0, milliseconds(1000));
  // Slot 3 ran 400 ms late: slot 4 stays at 4000 ms.
  Slot next = s.next_after(3, t0 + milliseconds(3400));
  EXPECT_EQ(next.index, 4u);
  EXPECT_EQ(next.at, t0 + milliseconds(4000));
  EXPECT_EQ(next.skipped, 0u);
}

TEST(Schedule, FullyMissedSlotsAreSkippedAndCounted) {
  Schedule s(t0, milliseconds(1000));
  // Slot 3 fired at 6500 ms: slots 4, 5 and 6 have passed; 7 is next.
  Slot next = s.next_after(3, t0 + milliseconds(6500));
  EXPECT_EQ(next.index, 7u);
  EXPECT_EQ(next.at, t0 + milliseconds(7000));
  EXPECT_EQ(next.skipped, 3u);
}

TEST(Schedule, ExactlyOnASlotBoundaryTakesTheNextOne) {
  Schedule s(t0, milliseconds(1000));
  Slot next = s.next_after(0, t0 + milliseconds(1000));
  EXPECT_EQ(next.index, 2u);
  EXPECT_EQ(next.skipped, 1u);
}

TEST(Schedule, ReplayingManyFiringsNeverDrifts) {
  Schedule s(t0 + milliseconds(123), milliseconds(250));
  std::uint64_t slot = 0;
  // Every run is 30 ms late (what a busy loop might do): slots stay put.
  for (int i = 0; i < 10'000; ++i) {
    auto fired = s.slot_time(slot) + milliseconds(30);
    slot = s.next_after(slot, fired).index;
  }
  EXPECT_EQ(slot, 10'000u);
  EXPECT_EQ(s.slot_time(slot), t0 + milliseconds(123) + milliseconds(250) * 10'000);
}

TEST(Schedule, RejectsNonPositiveInterval) {
  EXPECT_THROW(Schedule(t0, milliseconds(0)), std::invalid_argument);
}

wire::Stream stream() {
  wire::Stream s;
  s.set_key("latency/udp/n1/n2");
  s.set_tool("latency");
  s.set_src("n1");
  s.set_dst("n2");
  s.set_dst_address("127.0.0.2");
  s.set_dst_port(8473);
  s.set_interval_s(10);
  auto* a = s.mutable_latency();
  a->set_method("udp");
  a->set_count(5);
  a->set_spacing_ms(100);
  a->set_size(64);
  a->set_timeout_ms(1000);
  return s;
}

TEST(CheckStream, AcceptsAGoodStreamAndNamesWhatIsWrong) {
  Limits limits;
  EXPECT_EQ(check_stream(stream(), "n1", limits), "");
  auto s = stream();
  s.set_src("n3");
  EXPECT_NE(check_stream(s, "n1", limits).find("src"), std::string::npos);
  s = stream();
  s.mutable_latency()->set_count(0);
  EXPECT_NE(check_stream(s, "n1", limits).find("count"), std::string::npos);
  s = stream();
  s.mutable_latency()->set_size(8);
  EXPECT_NE(check_stream(s, "n1", limits).find("size"), std::string::npos);
  s = stream();
  s.mutable_latency()->set_method("icmp");
  EXPECT_EQ(check_stream(s, "n1", limits), "");
  s.mutable_latency()->set_method("sctp");
  EXPECT_NE(check_stream(s, "n1", limits).find("method"), std::string::npos);
  s = stream();
  s.set_interval_s(0);
  EXPECT_NE(check_stream(s, "n1", limits).find("interval"), std::string::npos);
  s = stream();
  s.set_dst_port(70000);
  EXPECT_NE(check_stream(s, "n1", limits).find("dst_port"), std::string::npos);
}

}  // namespace
}  // namespace flexmon::prober
