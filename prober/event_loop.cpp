#include "prober/event_loop.h"

#include <sys/prctl.h>

#include <optional>
#include <thread>

#include "common/log.h"
#include "prober/asio_loop.h"
#include "prober/deadline_timers.h"

namespace flexmon::prober {

struct EventLoop::Impl {
  asio::io_context io{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::unique_ptr<DeadlineTimers> deadlines;  // after io: destroyed before it
  std::thread thread;
};

asio::io_context& io_of(EventLoop& loop) { return loop.impl().io; }

EventLoop::EventLoop() : impl_(std::make_unique<Impl>()) {
  impl_->work.emplace(impl_->io.get_executor());
  impl_->deadlines = std::make_unique<DeadlineTimers>(*this);
}

EventLoop::~EventLoop() {
  stop();
  join();
}

void EventLoop::start() {
  impl_->thread = std::thread([this] {
    // Timers wake within 1 ns of their deadline instead of the default 50 us.
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    for (;;) {
      try {
        impl_->io.run();
        return;
      } catch (const std::exception& e) {
        // A handler bug must not end every stream of the node: log, go on.
        logger("prober")->error("event loop: unexpected exception: {}", e.what());
      }
    }
  });
}

void EventLoop::stop() {
  impl_->work.reset();
  impl_->io.stop();
}

void EventLoop::join() {
  if (impl_->thread.joinable()) impl_->thread.join();
}

void EventLoop::post(std::function<void()> task) { asio::post(impl_->io, std::move(task)); }

bool EventLoop::on_loop_thread() const { return impl_->io.get_executor().running_in_this_thread(); }

DeadlineTimers& EventLoop::deadlines() { return *impl_->deadlines; }

}  // namespace flexmon::prober
