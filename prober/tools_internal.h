// Private to prober/*tool*.cpp: shared helpers of the synchronous tools
// (addresses, clocks, absolute waits, the seal of bandwidth probes).
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/seal.h"
#include "prober/probe_packet.h"  // put_be, get_be
#include "prober/tools.h"

namespace flexmon::wire {
class LatencyArgs;
}

namespace flexmon::prober::tools {

struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;
  int family() const { return storage.ss_family; }
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  std::string to_string() const;
};

// getaddrinfo on `host` (IPv4 preferred), with `port`; nullopt + `error`.
std::optional<Address> resolve(const std::string& host, std::uint16_t port, std::string& error);

// Binds `fd` to `source` (any port); empty = no bind. False + `error`.
bool bind_source(int fd, const std::string& source, int family, std::string& error);

std::int64_t mono_ns();
// Sleeps until `mono_deadline_ns` (CLOCK_MONOTONIC, absolute).
void sleep_until(std::int64_t mono_deadline_ns);
// Timer slack of the calling thread to 1 ns (precise spacing).
void min_timer_slack();

// ppoll(fds, count) for up to `timeout_ns`, woken early by context.stop_fd:
// the number of `fds` ready, 0 on timeout or when stopping (the caller's
// loop then sees context.stop), -1 on error.
int poll_or_stop(pollfd* fds, std::size_t count, std::int64_t timeout_ns,
                 const ToolContext& context);

// Latency engine: `count` probes `spacing_ns` apart, each waited for up to
// `timeout_ns`; stop early at the first reply when `stop_on_reply`.
struct PingPlan {
  std::string method;  // icmp, udp, tcp
  std::uint32_t count = 1;
  std::int64_t spacing_ns = 0;
  std::int64_t timeout_ns = 1'000'000'000;
  std::size_t size = 56;
  bool stop_on_reply = false;
};

struct PingOutcome {
  std::vector<std::int64_t> rtt;     // -1 = lost
  std::vector<std::int64_t> tx_utc;  // 0 = not sent
  std::uint32_t sent = 0;
  std::uint32_t received = 0;
  std::uint32_t duplicates = 0;
  std::uint32_t refused = 0;      // TCP RST / ICMP port unreachable
  std::uint32_t unreachable = 0;  // other ICMP errors
  int first_answered = -1;
  std::uint32_t kernel_tx_stamps = 0;
  std::string error;      // a local failure (socket, send)
  std::string icmp_text;  // first ICMP error, for the result's message
};

PingOutcome ping(const Address& dst, const PingPlan& plan, const ToolContext& context,
                 const std::string& netns);

// Bandwidth tools: the seal that the responder checks (schemas/tools.md).
constexpr std::uint32_t kAbwMagic = 0x464D4131;       // "FMA1" abw probe
constexpr std::uint32_t kAbwReplyMagic = 0x464D4132;  // "FMA2" responder's reply
constexpr std::uint32_t kTputMagic = 0x464D5431;      // "FMT1" throughput hello
constexpr std::size_t kSealBytes = 16;                // truncated HMAC-SHA256

// HMAC-SHA256(key, data) truncated to kSealBytes: the wire's one HMAC
// (common/seal.h's Sealer), keyed once per session or peer.
std::array<std::uint8_t, kSealBytes> seal16(const Sealer& key, const std::uint8_t* data,
                                            std::size_t size);

wire::Result measure_latency(const wire::Stream& stream, const ToolContext& context);
wire::Result measure_abw(const wire::Stream& stream, const ToolContext& context);
wire::Result measure_throughput(const wire::Stream& stream, const ToolContext& context);

}  // namespace flexmon::prober::tools
