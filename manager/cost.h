// The cost model of probe traffic (schemas/xmlrpc-api.md, "Costs and
// budgets"): the bytes one measurement puts on the network, from its
// arguments or, for the bandwidth tools, from what past results on the path
// actually sent; average rates from the interval; and the rule that charges
// a shared stream's cost to the requests that share it.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "common/clock.h"
#include "manager/model.h"

namespace flexmon::manager {

// Average probe traffic: bits per second and bytes per day.
struct Cost {
  double bps = 0;
  double bytes_per_day = 0;
  Cost& operator+=(const Cost& o) {
    bps += o.bps;
    bytes_per_day += o.bytes_per_day;
    return *this;
  }
  Cost& operator-=(const Cost& o) {
    bps -= o.bps;
    bytes_per_day -= o.bytes_per_day;
    return *this;
  }
  friend Cost operator+(Cost a, const Cost& b) { return a += b; }
  friend Cost operator-(Cost a, const Cost& b) { return a -= b; }
};

// Bytes per measurement seen on a path lately: (tool, src, dst) -> bytes.
using History = std::map<std::tuple<std::string, std::string, std::string>, double>;

// IP and UDP header bytes of one probe packet; TCP handshake bytes of one
// tcp latency probe (SYN, SYN-ACK, RST with headers).
constexpr double kUdpOverhead = 28;
constexpr double kTcpProbeBytes = 160;
// A one-shot measurement is costed as a stream with this interval (a day).
constexpr double kOneshotInterval = 86'400;

// The bytes one measurement of `spec` on `path` sends, both directions: the
// arguments' bound, lowered to what past results on the path sent (the
// largest of them) when `history` has the path. Latency ignores history.
double measurement_bytes(const RequestSpec& spec, const Path& path, const History* history);

// The interval a request is costed at: its interval, a day for a one-shot.
double cost_interval(const RequestSpec& spec);

// The average cost of `bytes` every `interval_s` seconds.
Cost cost_of(double bytes, double interval_s);

// What a request would cost alone (no sharing): the sum over its paths.
Cost standalone_cost(const RequestSpec& spec, const History* history);

// The charging rule (Shapley value of the "airport game"): sort the sharers'
// rates (1/interval) ascending r1 <= ... <= rn; the stream runs at rn; the
// rate layer (r_k - r_(k-1)) is split equally among the sharers that need
// it, those with rate >= r_k. The shares add up to rn exactly, nobody pays
// more than their rate alone, and a faster sharer never lowers a slower one's
// share below what equal splitting of its own layers gives. Returns the
// shares in the order of `rates`.
std::vector<double> shared_rates(const std::vector<double>& rates);

// The largest bytes_sent of the abw and throughput results started since
// `since` per (tool, src, dst), through storage (largest_bytes_sent in
// storage/reader.h). An absent or unreadable cache gives an empty history
// (and the bounds apply).
History load_history(const std::filesystem::path& cache_db, UtcNs since);

}  // namespace flexmon::manager
