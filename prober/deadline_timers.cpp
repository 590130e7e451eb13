#include "prober/deadline_timers.h"

#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include "prober/asio_loop.h"

namespace flexmon::prober {

using Mono = std::chrono::steady_clock;

struct DeadlineTimers::Impl : std::enable_shared_from_this<DeadlineTimers::Impl> {
  struct Node {
    std::weak_ptr<DeadlineClient> client;
    std::uint64_t cookie = 0;
    std::uint32_t heap_pos = 0;
    bool active = false;
  };
  // Heap entries carry their key, so sifting touches only the heap array.
  struct Entry {
    MonoTime due;
    std::uint64_t order;  // FIFO among equal deadlines
    Id id;
  };

  asio::posix::stream_descriptor timer;
  std::vector<Node> nodes{1};  // index = Id; 0 unused
  std::vector<Id> free_ids;
  std::vector<Entry> heap;  // binary min-heap by (due, order)
  std::vector<std::weak_ptr<DeadlineClient>> clients;
  std::uint64_t next_order = 0;
  MonoTime armed = MonoTime::max();  // what the timerfd is set to
  bool running_batch = false;
  std::uint64_t wakeups = 0;

  explicit Impl(asio::io_context& io) : timer(io) {
    // steady_clock is CLOCK_MONOTONIC in libstdc++ and libc++ on Linux.
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0)
      throw std::runtime_error(fmt::format("prober: timerfd_create: {}", std::strerror(errno)));
    timer.assign(fd);
  }

  static bool earlier(const Entry& x, const Entry& y) {
    return x.due < y.due || (x.due == y.due && x.order < y.order);
  }

  void place(std::size_t pos, const Entry& e) {
    heap[pos] = e;
    nodes[e.id].heap_pos = static_cast<std::uint32_t>(pos);
  }

  void sift_up(std::size_t pos) {
    Entry e = heap[pos];
    while (pos > 0) {
      std::size_t parent = (pos - 1) / 2;
      if (!earlier(e, heap[parent])) break;
      place(pos, heap[parent]);
      pos = parent;
    }
    place(pos, e);
  }

  void sift_down(std::size_t pos) {
    Entry e = heap[pos];
    const std::size_t n = heap.size();
    for (;;) {
      std::size_t child = 2 * pos + 1;
      if (child >= n) break;
      if (child + 1 < n && earlier(heap[child + 1], heap[child])) ++child;
      if (!earlier(heap[child], e)) break;
      place(pos, heap[child]);
      pos = child;
    }
    place(pos, e);
  }

  void remove_at(std::size_t pos) {
    Entry last = heap.back();
    heap.pop_back();
    if (pos == heap.size()) return;
    place(pos, last);
    sift_down(pos);
    sift_up(nodes[last.id].heap_pos);
  }

  void release(Id id) {
    nodes[id].active = false;
    nodes[id].client.reset();
    free_ids.push_back(id);
  }

  Id schedule(MonoTime due, std::weak_ptr<DeadlineClient> client, std::uint64_t cookie) {
    Id id;
    if (free_ids.empty()) {
      id = static_cast<Id>(nodes.size());
      nodes.emplace_back();
    } else {
      id = free_ids.back();
      free_ids.pop_back();
    }
    Node& n = nodes[id];
    n.client = std::move(client);
    n.cookie = cookie;
    n.active = true;
    heap.push_back(Entry{due, next_order++, id});
    n.heap_pos = static_cast<std::uint32_t>(heap.size() - 1);
    sift_up(heap.size() - 1);
    if (!running_batch && due < armed) arm();
    return id;
  }

  void reschedule(Id id, MonoTime due) {
    if (id == 0 || id >= nodes.size() || !nodes[id].active) return;
    std::size_t pos = nodes[id].heap_pos;
    heap[pos].due = due;
    heap[pos].order = next_order++;
    sift_down(pos);
    sift_up(nodes[id].heap_pos);
    if (!running_batch && due < armed) arm();
  }

  void cancel(Id id) {
    if (id == 0 || id >= nodes.size() || !nodes[id].active) return;
    remove_at(nodes[id].heap_pos);
    release(id);
    // The timerfd may stay armed for the cancelled deadline: one wake-up
    // that finds nothing due costs less than re-arming at every cancel.
  }

  // Sets the timerfd to the earliest deadline (absolute), or disarms it.
  void arm() {
    MonoTime want = heap.empty() ? MonoTime::max() : heap.front().due;
    if (want == armed) return;
    itimerspec spec{};
    if (want != MonoTime::max()) {
      auto ns =
          std::chrono::duration_cast<std::chrono::nanoseconds>(want.time_since_epoch()).count();
      // A zero it_value disarms: a deadline at the clock's origin is long past anyway.
      if (ns <= 0) ns = 1;
      spec.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      spec.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    }
    if (timerfd_settime(timer.native_handle(), TFD_TIMER_ABSTIME, &spec, nullptr) == 0)
      armed = want;
  }

  void wait() {
    timer.async_wait(asio::posix::stream_descriptor::wait_read,
                     [weak = weak_from_this()](const boost::system::error_code& ec) {
                       if (ec == asio::error::operation_aborted) return;
                       if (auto self = weak.lock()) {
                         self->expired();
                         self->wait();
                       }
                     });
  }

  void expired() {
    std::uint64_t ticks = 0;
    if (::read(timer.native_handle(), &ticks, sizeof ticks) < 0 && errno != EAGAIN) return;
    armed = MonoTime::max();  // fired: the kernel timer is idle now
    run_batch();
  }

  void run_batch() {
    running_batch = true;
    ++wakeups;
    auto now = Mono::now();
    while (!heap.empty()) {
      const Entry top = heap.front();
      if (top.due > now) {
        now = Mono::now();  // what fell due while the batch ran joins it
        if (top.due > now) break;
      }
      auto client = nodes[top.id].client.lock();
      const std::uint64_t cookie = nodes[top.id].cookie;
      remove_at(0);
      release(top.id);
      if (client) client->on_deadline(cookie, top.due);
    }
    std::erase_if(clients, [](const auto& c) { return c.expired(); });
    // By index: a client may add another while flushing.
    for (std::size_t i = 0; i < clients.size(); ++i)
      if (auto client = clients[i].lock()) client->after_batch();
    running_batch = false;
    arm();
  }
};

DeadlineTimers::DeadlineTimers(EventLoop& loop) : impl_(std::make_shared<Impl>(io_of(loop))) {
  impl_->wait();
}

DeadlineTimers::~DeadlineTimers() {
  boost::system::error_code ignored;
  impl_->timer.close(ignored);
}

void DeadlineTimers::add_client(std::weak_ptr<DeadlineClient> client) {
  impl_->clients.push_back(std::move(client));
}

DeadlineTimers::Id DeadlineTimers::schedule(MonoTime due, std::weak_ptr<DeadlineClient> client,
                                            std::uint64_t cookie) {
  return impl_->schedule(due, std::move(client), cookie);
}

void DeadlineTimers::reschedule(Id id, MonoTime due) { impl_->reschedule(id, due); }

void DeadlineTimers::cancel(Id id) { impl_->cancel(id); }

bool DeadlineTimers::in_batch() const { return impl_->running_batch; }

std::size_t DeadlineTimers::size() const { return impl_->heap.size(); }

std::uint64_t DeadlineTimers::wakeups() const { return impl_->wakeups; }

}  // namespace flexmon::prober
