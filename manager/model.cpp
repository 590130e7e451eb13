#include "manager/model.h"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

namespace flexmon::manager {

std::string_view state_name(RequestState state) {
  switch (state) {
    case RequestState::active:
      return "active";
    case RequestState::cancelled:
      return "cancelled";
    case RequestState::expired:
      return "expired";
    case RequestState::done:
      return "done";
  }
  return "active";
}

std::optional<RequestState> state_from_name(std::string_view name) {
  for (auto s :
       {RequestState::active, RequestState::cancelled, RequestState::expired, RequestState::done})
    if (state_name(s) == name) return s;
  return std::nullopt;
}

std::string_view mode_name(Mode mode) { return mode == Mode::oneshot ? "oneshot" : "continuous"; }

std::optional<std::uint64_t> parse_request_id(std::string_view id) {
  if (id.size() < 2 || id.size() > 20 || id[0] != 'r' || id[1] == '0') return std::nullopt;
  std::uint64_t num = 0;
  auto [end, ec] = std::from_chars(id.data() + 1, id.data() + id.size(), num);
  if (ec != std::errc() || end != id.data() + id.size() || num == 0) return std::nullopt;
  return num;
}

std::string stream_key(const RequestSpec& spec, const Path& path,
                       std::optional<std::uint64_t> oneshot_request) {
  const auto& a = spec.latency;
  std::string key = fmt::format("{}/{}/c{}/s{}/z{}/t{}/{}>{}", spec.tool, a.method, a.count,
                                a.spacing_ms, a.size, a.timeout_ms, path.src, path.dst);
  if (oneshot_request) key += fmt::format("/once-r{}", *oneshot_request);
  return key;
}

StreamSets derive_streams(const std::vector<const Request*>& requests, const Config& config,
                          UtcNs now) {
  StreamSets sets;
  for (const auto& node : config.nodes) sets[node.id];
  // key -> stream, so that requests sharing a key merge into one stream.
  std::map<std::string, wire::Stream> streams;
  for (const Request* r : requests) {
    if (r->state != RequestState::active) continue;
    if (r->ends_ns && *r->ends_ns <= now) continue;
    const bool oneshot = r->spec.mode == Mode::oneshot;
    for (const auto& path : r->spec.paths) {
      if (oneshot && r->oneshot_sent.count(path)) continue;
      const NodeConfig* dst = config.find_node(path.dst);
      if (!config.find_node(path.src) || !dst) continue;
      std::string key = stream_key(r->spec, path, oneshot ? std::optional(r->num) : std::nullopt);
      auto [it, inserted] = streams.try_emplace(key);
      wire::Stream& s = it->second;
      if (inserted) {
        s.set_key(key);
        s.set_tool(r->spec.tool);
        s.set_src(path.src);
        s.set_dst(path.dst);
        s.set_dst_address(dst->address);
        s.set_dst_port(config.responder_port(*dst));
        s.set_interval_s(r->spec.interval_s);
        s.set_oneshot(oneshot);
        auto* l = s.mutable_latency();
        l->set_method(r->spec.latency.method);
        l->set_count(r->spec.latency.count);
        l->set_spacing_ms(r->spec.latency.spacing_ms);
        l->set_size(r->spec.latency.size);
        l->set_timeout_ms(r->spec.latency.timeout_ms);
      } else if (r->spec.interval_s < s.interval_s()) {
        s.set_interval_s(r->spec.interval_s);
      }
    }
  }
  for (auto& [key, stream] : streams) sets[stream.src()].push_back(std::move(stream));
  return sets;
}

}  // namespace flexmon::manager
