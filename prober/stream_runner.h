// Runs the streams assigned to this prober on absolute schedules (see
// schedule.h): each stream gets a random initial offset within its interval so
// that streams spread, keeps its schedule across assignments that still list
// it, and stops when an assignment drops it. A one-shot stream runs once.
// A due slot waits in a ready queue until it may start: at most one
// measurement towards a destination at a time, bandwidth measurements (abw,
// throughput) never overlap on the node; the queue serves higher priorities
// first, and slots that pass while waiting are skipped and counted. Before a
// slot starts, `admit(priority)` (the result sender's spool check) may pause
// it: the slot is not run and nothing is lost; the pause is logged and
// counted, and the stream resumes at its next slot that is admitted.
// Every slot of every stream waits in the loop's DeadlineTimers (one timerfd).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "prober/event_loop.h"
#include "prober/schedule.h"

namespace flexmon::wire {
class Result;
class Stream;
}  // namespace flexmon::wire

namespace flexmon::prober {

struct RunnerCounters {
  std::atomic<std::uint64_t> started{0};
  std::atomic<std::uint64_t> skipped_slots{0};  // slots missed (late, or a run still busy)
  std::atomic<std::uint64_t> rejected_streams{0};
  std::atomic<std::uint64_t> paused_slots{0};    // slots not run: admit() said no (spool full)
  std::atomic<std::uint32_t> paused_streams{0};  // streams whose last slot was paused
};

// What the prober could not run, reported in each heartbeat (never hidden).
struct Shortfall {
  std::uint64_t skipped_slots = 0;   // since the start
  double per_second = 0;             // slots skipped per second over the last period
  std::uint32_t behind_streams = 0;  // streams that skipped a slot in the last period
  std::size_t waiting = 0;           // measurements due, waiting for their turn now
};

class StreamRunner {
 public:
  // Starts one measurement of a stream whose slot was due at `due`, calling
  // back with its result. The stream is shared and never changed.
  using Measure = std::function<void(std::shared_ptr<const wire::Stream> stream, MonoTime due,
                                     std::function<void(wire::Result)> done)>;
  // Receives every result (on the loop thread).
  using Sink = std::function<void(wire::Result)>;
  // Whether a slot of this priority may start now (loop thread).
  using Admit = std::function<bool(int priority)>;

  // `admit` empty: every slot is admitted.
  StreamRunner(EventLoop& loop, std::string node, Limits limits, Measure measure, Sink sink,
               Admit admit = {});
  ~StreamRunner();

  // Replaces the stream set (the full set, as an Assignment carries it).
  // Streams that are not for this node or whose arguments are out of bounds
  // are logged and left out. Any thread.
  void assign(std::vector<wire::Stream> streams);

  // The shortfall since the last call (which starts a new period). Called
  // on the loop thread (heartbeats) or from another thread (tests).
  Shortfall take_shortfall();

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
