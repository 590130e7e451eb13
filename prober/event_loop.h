// One event-loop thread for a prober's sockets and timers (Boost.Asio behind
// pimpl: code outside prober/*.cpp never sees Asio).
#pragma once

#include <functional>
#include <memory>

namespace flexmon::prober {

class DeadlineTimers;

class EventLoop {
 public:
  EventLoop();
  // Stops and joins the thread if still running.
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Starts the loop thread (timer slack 1 ns, for precise probe spacing).
  void start();
  // Makes the loop return promptly; pending handlers are not run. Any thread.
  void stop();
  // Waits for the loop thread to end.
  void join();
  // Runs `task` on the loop thread.
  void post(std::function<void()> task);
  // True on the loop thread.
  bool on_loop_thread() const;
  // The loop's deadline scheduler (one timerfd for every stream and
  // measurement of the loop); loop thread only.
  DeadlineTimers& deadlines();

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexmon::prober
