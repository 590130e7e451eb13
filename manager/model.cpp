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
  std::string key;
  if (spec.tool == Tool::kAbw) {
    const auto& a = spec.abw;
    key = fmt::format("abw/r{}/b{}/d{}", a.max_rate_bps, a.max_bytes, a.max_duration_ms);
  } else if (spec.tool == Tool::kThroughput) {
    const auto& t = spec.throughput;
    key = fmt::format("throughput/d{}/b{}", t.duration_ms, t.max_bytes);
  } else {
    const auto& a = spec.latency;
    key = fmt::format("{}/{}/c{}/s{}/z{}/t{}", tool_name(spec.tool), a.method, a.count,
                      a.spacing_ms, a.size, a.timeout_ms);
    if (a.method == "tcp") key += fmt::format("/p{}", a.port);
  }
  if (!spec.netns.empty()) key += "/ns=" + spec.netns;
  key += fmt::format("/{}>{}", path.src, path.dst);
  if (oneshot_request) key += fmt::format("/once-r{}", *oneshot_request);
  return key;
}

wire::Stream make_stream(const RequestSpec& spec, const Path& path, const Config& config,
                         std::optional<std::uint64_t> oneshot_request) {
  wire::Stream s;
  const NodeConfig* dst = config.find_node(path.dst);
  s.set_key(stream_key(spec, path, oneshot_request));
  s.set_tool(std::string(tool_name(spec.tool)));
  s.set_src(path.src);
  s.set_dst(path.dst);
  if (dst) {
    s.set_dst_address(dst->address);
    s.set_dst_port(config.responder_port(*dst));
  }
  s.set_interval_s(spec.interval_s);
  s.set_oneshot(oneshot_request.has_value());
  s.set_priority(spec.priority);
  if (!spec.netns.empty()) s.set_netns(spec.netns);
  if (spec.tool == Tool::kAbw) {
    auto* a = s.mutable_abw();
    a->set_max_rate_bps(spec.abw.max_rate_bps);
    a->set_max_bytes(spec.abw.max_bytes);
    a->set_max_duration_ms(spec.abw.max_duration_ms);
  } else if (spec.tool == Tool::kThroughput) {
    auto* t = s.mutable_throughput();
    t->set_duration_ms(spec.throughput.duration_ms);
    t->set_max_bytes(spec.throughput.max_bytes);
  } else {
    auto* l = s.mutable_latency();
    l->set_method(spec.latency.method);
    l->set_count(spec.latency.count);
    l->set_spacing_ms(spec.latency.spacing_ms);
    l->set_size(spec.latency.size);
    l->set_timeout_ms(spec.latency.timeout_ms);
    if (spec.latency.method == "tcp" && spec.latency.port) s.set_dst_tcp_port(spec.latency.port);
  }
  return s;
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
      if (!config.find_node(path.src) || !config.find_node(path.dst)) continue;
      std::string key = stream_key(r->spec, path, oneshot ? std::optional(r->num) : std::nullopt);
      auto it = streams.find(key);
      if (it == streams.end()) {
        streams.emplace(key, make_stream(r->spec, path, config,
                                         oneshot ? std::optional(r->num) : std::nullopt));
        continue;
      }
      wire::Stream& s = it->second;
      if (r->spec.interval_s < s.interval_s()) s.set_interval_s(r->spec.interval_s);
      if (r->spec.priority > s.priority()) s.set_priority(r->spec.priority);
    }
  }
  for (auto& [key, stream] : streams) sets[stream.src()].push_back(std::move(stream));
  return sets;
}

}  // namespace flexmon::manager
