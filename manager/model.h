// The manager's data model: requests (what users ask for) and the pure
// derivation of streams (what probers run) from them. No I/O here.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/tool.h"
#include "wire.pb.h"

namespace flexmon::manager {

enum class RequestState { active, cancelled, expired, done };
enum class Mode { continuous, oneshot };

std::string_view state_name(RequestState state);
std::optional<RequestState> state_from_name(std::string_view name);
std::string_view mode_name(Mode mode);

// The latency tool's arguments, after defaults were applied.
struct LatencyArgs {
  std::string method = "udp";  // "udp", "icmp" or "tcp"
  std::uint32_t count = 5;
  std::uint32_t spacing_ms = 100;
  std::uint32_t size = 64;
  std::uint32_t timeout_ms = 1000;
  std::uint32_t port = 0;  // tcp: the destination's TCP port; 0 = the responder's
  bool operator==(const LatencyArgs&) const = default;
};

// The available-bandwidth tool's hard caps per measurement.
struct AbwArgs {
  std::uint64_t max_rate_bps = 10'000'000;
  std::uint64_t max_bytes = 1'000'000;
  std::uint32_t max_duration_ms = 2'000;
  bool operator==(const AbwArgs&) const = default;
};

// The throughput tool's caps per measurement.
struct ThroughputArgs {
  std::uint32_t duration_ms = 2'000;
  std::uint64_t max_bytes = 10'000'000;
  bool operator==(const ThroughputArgs&) const = default;
};

// An ordered pair of node ids: the prober `src` measures towards `dst`.
struct Path {
  std::string src;
  std::string dst;
  auto operator<=>(const Path&) const = default;
};

// A validated probe.request spec (see manager/spec.h).
struct RequestSpec {
  Tool tool = Tool::kLatency;
  Mode mode = Mode::continuous;
  double interval_s = 0;             // 0: not given (one-shot only)
  std::optional<double> duration_s;  // continuous only
  std::int32_t priority = 0;         // higher runs first when a node cannot keep up
  std::string netns;                 // network namespace of the probe; empty: the prober's
  LatencyArgs latency;               // tool "latency"
  AbwArgs abw;                       // tool "abw"
  ThroughputArgs throughput;         // tool "throughput"
  std::vector<Path> paths;           // explicit, or every pair of `nodes`
};

// A temporary edit: at `at_ns` the request returns to `spec` (and `ends_ns`).
struct Revert {
  UtcNs at_ns = 0;
  RequestSpec spec;
  std::optional<UtcNs> ends_ns;
};

struct Request {
  std::uint64_t num = 0;  // the id is "r<num>"
  std::string owner;
  RequestSpec spec;
  RequestState state = RequestState::active;
  UtcNs created_ns = 0;
  std::optional<UtcNs> ends_ns;  // continuous requests with a duration
  // One-shot only, in memory: paths whose stream was handed to a prober
  // (in flight or delivered); they are not derived again.
  std::set<Path> oneshot_sent;
  std::optional<Revert> revert;  // set while a temporary edit is in force

  std::string id() const { return "r" + std::to_string(num); }
};

// Requests by number, oldest first.
using RequestMap = std::map<std::uint64_t, Request>;

// Parses "r<N>" (N >= 1, no sign or leading zeros); nullopt if malformed.
std::optional<std::uint64_t> parse_request_id(std::string_view id);

// The stable stream key: tool, normalized arguments, namespace, path, e.g.
// "latency/udp/c5/s100/z64/t1000/n1>n2" or "abw/r10000000/b1000000/d2000/n1>n2".
// One-shot streams end in "/once-r7" so that each one-shot request gets its
// own single measurement. Priority and interval are not part of the key.
std::string stream_key(const RequestSpec& spec, const Path& path,
                       std::optional<std::uint64_t> oneshot_request);

// The stream a request's path maps to, with this request's interval and
// priority (merging picks the shortest interval and highest priority).
wire::Stream make_stream(const RequestSpec& spec, const Path& path, const Config& config,
                         std::optional<std::uint64_t> oneshot_request);

// Streams per prober (node id), sorted by key. Every configured node has an
// entry, empty when it runs nothing.
using StreamSets = std::map<std::string, std::vector<wire::Stream>>;

// Derives the streams from the requests that are active at `now`: one stream
// per (tool, args, path) at the shortest requested interval; one-shot paths
// not yet sent become one-shot streams. Paths naming unknown nodes are
// skipped. Pure: the same input always gives the same output.
StreamSets derive_streams(const std::vector<const Request*>& requests, const Config& config,
                          UtcNs now);

}  // namespace flexmon::manager
