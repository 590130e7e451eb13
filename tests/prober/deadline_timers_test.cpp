// DeadlineTimers on a real loop and timerfd: deadlines run in time order,
// none before it is due, cancelled and moved ones as asked, a batch ends
// with after_batch, and a destroyed client's deadlines are skipped.
#include "prober/deadline_timers.h"

#include <gtest/gtest.h>

#include <future>
#include <mutex>
#include <vector>

#include "test_util.h"

namespace flexmon::prober {
namespace {

using Mono = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct Recorder : DeadlineClient {
  std::mutex mu;
  std::vector<std::uint64_t> order;
  std::vector<bool> early;  // ran before its due time
  int batches = 0;
  void on_deadline(std::uint64_t cookie, MonoTime due) override {
    std::lock_guard lock(mu);
    order.push_back(cookie);
    early.push_back(Mono::now() < due);
  }
  void after_batch() override {
    std::lock_guard lock(mu);
    ++batches;
  }
  std::size_t ran() {
    std::lock_guard lock(mu);
    return order.size();
  }
};

template <typename F>
void on_loop(EventLoop& loop, F f) {
  std::promise<void> done;
  loop.post([&] {
    f();
    done.set_value();
  });
  done.get_future().wait();
}

TEST(DeadlineTimers, RunInOrderNeverEarlyWithCancelAndReschedule) {
  EventLoop loop;
  auto client = std::make_shared<Recorder>();
  loop.start();
  on_loop(loop, [&] {
    auto& t = loop.deadlines();
    t.add_client(client);
    auto now = Mono::now();
    t.schedule(now + milliseconds(40), client, 4);
    t.schedule(now + milliseconds(10), client, 1);
    auto cancelled = t.schedule(now + milliseconds(20), client, 99);
    auto moved = t.schedule(now + milliseconds(500), client, 3);
    t.schedule(now + milliseconds(25), client, 2);
    t.cancel(cancelled);
    t.reschedule(moved, now + milliseconds(30));
  });
  ASSERT_TRUE(test::eventually([&] { return client->ran() == 4; }));
  std::this_thread::sleep_for(milliseconds(50));
  std::lock_guard lock(client->mu);
  EXPECT_EQ(client->order, (std::vector<std::uint64_t>{1, 2, 3, 4}));
  for (bool e : client->early) EXPECT_FALSE(e) << "a deadline ran before it was due";
  EXPECT_GE(client->batches, 1);
  loop.stop();
  loop.join();
}

TEST(DeadlineTimers, DeadlinesDueTogetherRunInOneBatch) {
  EventLoop loop;
  auto client = std::make_shared<Recorder>();
  loop.start();
  std::uint64_t wakeups_before = 0;
  on_loop(loop, [&] {
    auto& t = loop.deadlines();
    t.add_client(client);
    wakeups_before = t.wakeups();
    auto due = Mono::now() + milliseconds(20);
    for (std::uint64_t i = 0; i < 1000; ++i) t.schedule(due, client, i);
  });
  ASSERT_TRUE(test::eventually([&] { return client->ran() == 1000; }));
  std::uint64_t wakeups = 0;
  on_loop(loop, [&] { wakeups = loop.deadlines().wakeups() - wakeups_before; });
  EXPECT_EQ(wakeups, 1U);
  std::lock_guard lock(client->mu);
  EXPECT_EQ(client->batches, 1);
  // Equal deadlines run in the order they were scheduled.
  for (std::uint64_t i = 0; i < 1000; ++i) EXPECT_EQ(client->order[i], i);
  loop.stop();
  loop.join();
}

TEST(DeadlineTimers, ADestroyedClientsDeadlinesAreSkipped) {
  EventLoop loop;
  auto gone = std::make_shared<Recorder>();
  auto stays = std::make_shared<Recorder>();
  loop.start();
  on_loop(loop, [&] {
    auto now = Mono::now();
    loop.deadlines().schedule(now + milliseconds(20), gone, 1);
    loop.deadlines().schedule(now + milliseconds(30), stays, 2);
  });
  gone.reset();
  ASSERT_TRUE(test::eventually([&] { return stays->ran() == 1; }));
  on_loop(loop, [&] { EXPECT_EQ(loop.deadlines().size(), 0U); });
  loop.stop();
  loop.join();
}

}  // namespace
}  // namespace flexmon::prober
