// Runs the streams assigned to this prober on absolute schedules (see
// schedule.h): each stream gets a random initial offset within its interval so
// that streams spread, keeps its schedule across assignments that still list
// it, and stops when an assignment drops it. A one-shot stream runs once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "prober/event_loop.h"

namespace flexmon::wire {
class Result;
class Stream;
}  // namespace flexmon::wire

namespace flexmon::prober {

struct RunnerCounters {
  std::atomic<std::uint64_t> started{0};
  std::atomic<std::uint64_t> skipped_slots{0};  // slots missed (late, or a run still busy)
  std::atomic<std::uint64_t> rejected_streams{0};
};

class StreamRunner {
 public:
  // Starts one measurement of a stream, calling back with its result.
  using Measure = std::function<void(const wire::Stream&, std::function<void(wire::Result)>)>;
  // Receives every result (on the loop thread).
  using Sink = std::function<void(wire::Result)>;

  StreamRunner(EventLoop& loop, std::string node, Limits limits, Measure measure, Sink sink);
  ~StreamRunner();

  // Replaces the stream set (the full set, as an Assignment carries it).
  // Streams that are not for this node or whose arguments are out of bounds
  // are logged and left out. Any thread.
  void assign(std::vector<wire::Stream> streams);

  // Streams scheduled, and measurements per second they add up to.
  std::size_t streams() const;
  double load() const;
  const RunnerCounters& counters() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// Why a stream cannot run on `node` under `limits`, or empty if it can.
std::string check_stream(const wire::Stream& stream, const std::string& node, const Limits& limits);

}  // namespace flexmon::prober
