// The UDP latency probe: a 16-byte binary header (not protobuf, so a packet
// is cheap to check and echo) padded to the requested size. Layout and rules:
// schemas/wire.md, "Latency probe packets".
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace flexmon::prober {

constexpr std::uint32_t kProbeMagic = 0x464D5031;  // "FMP1"
constexpr std::uint8_t kProbeVersion = 1;
constexpr std::size_t kProbeHeaderBytes = 16;

enum class ProbeKind : std::uint8_t { request = 1, reply = 2 };

struct ProbeHeader {
  ProbeKind kind = ProbeKind::request;
  std::uint16_t index = 0;        // packet index within the measurement
  std::uint64_t measurement = 0;  // random id of the measurement
};

// Big-endian fields of `bytes` bytes, for every probe format of the prober
// (this header, ICMP echo, the abw / throughput probes of tools_internal.h).
void put_be(std::uint8_t* p, std::uint64_t value, int bytes);
std::uint64_t get_be(const std::uint8_t* p, int bytes);

// Writes `header` followed by zero padding into `out` (its size is the
// packet's size); false if `out` is smaller than the header.
bool encode_probe(const ProbeHeader& header, std::span<std::uint8_t> out);

// Encodes a packet of `size` bytes (size >= kProbeHeaderBytes).
std::string encode_probe(const ProbeHeader& header, std::size_t size);

// Parses a packet; nullopt unless magic, version, kind, reserved bits and
// `min_size <= size <= max_size` are all right.
std::optional<ProbeHeader> decode_probe(std::span<const std::uint8_t> packet,
                                        std::size_t min_size = kProbeHeaderBytes,
                                        std::size_t max_size = 65507);

}  // namespace flexmon::prober
