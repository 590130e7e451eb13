// The measurement tools behind one call: latency (icmp, udp, tcp), abw and
// throughput. Each measurement runs synchronously on the calling thread with
// its own sockets (opened in Stream.netns when set), on an absolute schedule
// with timer slack at 1 ns. Used by `flexmon-prober run` and by the daemon's
// stream runner (through ToolRunner). Methods and estimator: schemas/tools.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace flexmon::wire {
class Result;
class Stream;
}  // namespace flexmon::wire

namespace flexmon::prober {

// How a path that lost every packet is probed until it answers again.
struct OutageOptions {
  bool enabled = true;
  std::uint32_t spacing_ms = 200;  // between extra probes (faster than streams)
  std::uint32_t max_probes = 50;   // hard bound on the extra probes
};

struct ToolContext {
  std::string node;            // labels Result.src and names the sealing key
  std::string key;             // this node's raw key: seals abw / throughput
  std::string source_address;  // bind probing sockets here; empty = any
  OutageOptions outage;
  const std::atomic<bool>* stop = nullptr;  // ends a measurement early when set
  // Readable once `stop` is set (an eventfd, -1: none): a measurement waiting
  // for a reply or its next probe wakes at once instead of at its deadline.
  int stop_fd = -1;
};

// The result of one measurement of `stream` by `node`, starting now: stream,
// tool, src, dst and start_ns set; every tool fills in the rest from it.
wire::Result new_result(const wire::Stream& stream, const std::string& node);
// The same from the fields, for LatencyProber, which keeps them in its
// reused records rather than the stream.
wire::Result new_result(const std::string& stream_key, const std::string& tool,
                        const std::string& node, const std::string& dst, std::int64_t start_ns);

// Runs one measurement of `stream` and returns its result (seq unset). Never
// throws for a measurement failure: the status and error say what happened.
wire::Result run_measurement(const wire::Stream& stream, const ToolContext& context);

// After a latency result that lost every probe (timeout / unreachable):
// probes the path every outage.spacing_ms, at most outage.max_probes times,
// until it answers, and sets `result.outage`. Blocks for that time.
void follow_outage(const wire::Stream& stream, const ToolContext& context, wire::Result& result);

// Why `stream`'s tool and arguments cannot run (tool, method, caps), or empty.
std::string check_tool_args(const wire::Stream& stream);

// The result as JSON, the same fields as stored (flexmon-prober run --json).
std::string result_json(const wire::Result& result);

// Opens a socket inside network namespace `netns` (a name under /run/netns or
// a path such as /proc/PID/ns/net; empty = this process's namespace). The
// socket keeps its namespace. -1 with `error` set on failure; a path that is
// not a network namespace (a FIFO, a regular file, a directory, a device,
// another kind of namespace) is refused without opening the file itself, so
// it never blocks, and `error` names the path and what it is.
int open_socket_in(const std::string& netns, int domain, int type, int protocol,
                   std::string& error);

// Runs measurements on worker threads for the daemon: latency in parallel,
// bandwidth tools (abw, throughput) one at a time per node. Destroying it
// (the prober's SIGTERM) wakes every running measurement through
// ToolContext::stop_fd and joins the workers.
class ToolRunner {
 public:
  using Done = std::function<void(wire::Result)>;
  ToolRunner(ToolContext context, unsigned threads);
  ~ToolRunner();  // stops and joins the workers; pending work is dropped
  // Queues one measurement; `done` runs on a worker thread.
  void measure(const wire::Stream& stream, Done done);
  // Queues follow_outage(stream, result); `done` runs on a worker thread.
  void follow_outage(const wire::Stream& stream, wire::Result result, Done done);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexmon::prober
