#include "prober/probe_packet.h"

#include <algorithm>

namespace flexmon::prober {

void put_be(std::uint8_t* p, std::uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) {
    p[i] = static_cast<std::uint8_t>(value);
    value >>= 8;
  }
}

std::uint64_t get_be(const std::uint8_t* p, int bytes) {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value = (value << 8) | p[i];
  return value;
}

bool encode_probe(const ProbeHeader& header, std::span<std::uint8_t> out) {
  if (out.size() < kProbeHeaderBytes) return false;
  std::fill(out.begin(), out.end(), std::uint8_t{0});
  put_be(out.data(), kProbeMagic, 4);
  out[4] = kProbeVersion;
  out[5] = static_cast<std::uint8_t>(header.kind);
  put_be(out.data() + 6, header.index, 2);
  put_be(out.data() + 8, header.measurement, 8);
  return true;
}

std::string encode_probe(const ProbeHeader& header, std::size_t size) {
  std::string packet(std::max(size, kProbeHeaderBytes), '\0');
  encode_probe(header, std::span(reinterpret_cast<std::uint8_t*>(packet.data()), packet.size()));
  return packet;
}

std::optional<ProbeHeader> decode_probe(std::span<const std::uint8_t> packet, std::size_t min_size,
                                        std::size_t max_size) {
  if (packet.size() < std::max(min_size, kProbeHeaderBytes) || packet.size() > max_size)
    return std::nullopt;
  if (get_be(packet.data(), 4) != kProbeMagic || packet[4] != kProbeVersion) return std::nullopt;
  if (packet[5] != static_cast<std::uint8_t>(ProbeKind::request) &&
      packet[5] != static_cast<std::uint8_t>(ProbeKind::reply))
    return std::nullopt;
  ProbeHeader header;
  header.kind = static_cast<ProbeKind>(packet[5]);
  header.index = static_cast<std::uint16_t>(get_be(packet.data() + 6, 2));
  header.measurement = get_be(packet.data() + 8, 8);
  return header;
}

}  // namespace flexmon::prober
