#include "manager/spec.h"

#include <fnmatch.h>

#include <cmath>
#include <ctime>
#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>

#include "common/tool.h"
#include "manager/xmlrpc_values.h"

namespace flexmon::manager {

namespace {

using V = xmlrpc_c::value;

std::string fmt_number(double v) { return fmt::format("{}", v); }

double get_number(const V& v, const std::string& name) {
  double d = 0;
  switch (v.type()) {
    case V::TYPE_INT:
      d = xmlrpc_c::value_int(v).cvalue();
      break;
    case V::TYPE_I8:
      d = static_cast<double>(xmlrpc_c::value_i8(v).cvalue());
      break;
    case V::TYPE_DOUBLE:
      d = xmlrpc_c::value_double(v).cvalue();
      break;
    default:
      bad_argument(fmt::format("{}: expected a number of seconds, got {}", name, type_name(v)));
  }
  if (!std::isfinite(d)) bad_argument(fmt::format("{}: not a finite number", name));
  return d;
}

void check_keys(const xmlrpc_c::cstruct& s, const std::string& prefix,
                const std::set<std::string>& allowed) {
  for (const auto& [key, value] : s) {
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      bad_argument(
          fmt::format("{}{}: unknown key (expected one of {})", prefix, sanitized(key), list));
    }
  }
}

void check_range(std::uint32_t x, const std::string& name, std::uint32_t min, std::uint32_t max) {
  if (x < min)
    bad_argument(fmt::format("{}: {} (the default) is below the limit of {}", name, x, min));
  if (x > max)
    bad_argument(fmt::format("{}: {} (the default) is above the limit of {}", name, x, max));
}

// A netns as the prober resolves it: a name stands for /run/netns/NAME.
std::string netns_path(const std::string& netns) {
  return netns.find('/') == std::string::npos ? "/run/netns/" + netns : netns;
}

// Refuses a netns that none of the role's patterns (limits.netns, or
// limits.roles.ROLE.netns) allows: kNotPermitted naming the key and its list.
void check_netns_allowed(const std::string& netns, const EffectiveLimits& limits) {
  const std::string path = netns_path(netns);
  for (const auto& pattern : limits.netns)
    if (fnmatch(netns_path(pattern).c_str(), path.c_str(), FNM_PATHNAME) == 0) return;
  std::string allowed;
  for (std::size_t i = 0; i < limits.netns.size() && i < 8; ++i)
    allowed += (i ? ", " : "") + in_quotes(limits.netns[i]);
  if (limits.netns.size() > 8) allowed += fmt::format(" and {} more", limits.netns.size() - 8);
  throw ApiFault(kNotPermitted, fmt::format("netns: {} is not allowed for this role ({} allows {})",
                                            in_quotes(netns), limits.netns_key,
                                            allowed.empty() ? "none" : allowed));
}

std::uint64_t bounded_u64(const V& v, const std::string& name, std::uint64_t min,
                          std::uint64_t max) {
  double x = 0;
  if (v.type() == V::TYPE_DOUBLE) {
    x = xmlrpc_c::value_double(v).cvalue();
    if (!std::isfinite(x) || x != std::floor(x))
      bad_argument(fmt::format("{}: expected a whole number, got {}", name, fmt_number(x)));
  } else {
    x = static_cast<double>(get_int(v, name));
  }
  if (x < static_cast<double>(min))
    bad_argument(fmt::format("{}: {} is below the limit of {}", name, fmt_number(x), min));
  if (x > static_cast<double>(max))
    bad_argument(fmt::format("{}: {} is above the limit of {}", name, fmt_number(x), max));
  return static_cast<std::uint64_t>(x);
}

void check_range64(std::uint64_t x, const std::string& name, std::uint64_t min, std::uint64_t max) {
  if (x < min)
    bad_argument(fmt::format("{}: {} (the default) is below the limit of {}", name, x, min));
  if (x > max)
    bad_argument(fmt::format("{}: {} (the default) is above the limit of {}", name, x, max));
}

LatencyArgs parse_latency_args(const xmlrpc_c::cstruct* args, const Limits& limits,
                               LatencyArgs a = {}) {
  const LatencyLimits& l = limits.latency;
  if (args) {
    check_keys(*args, "args.", {"method", "count", "spacing_ms", "size", "timeout_ms", "port"});
    if (auto it = args->find("method"); it != args->end()) {
      a.method = get_string(it->second, "args.method");
      if (a.method != "udp" && a.method != "icmp" && a.method != "tcp")
        bad_argument(fmt::format("args.method: {} is not supported (supported: udp, icmp, tcp)",
                                 in_quotes(a.method)));
    }
    if (auto it = args->find("count"); it != args->end())
      a.count = bounded_uint(it->second, "args.count", 1, l.max_count);
    if (auto it = args->find("spacing_ms"); it != args->end())
      a.spacing_ms =
          bounded_uint(it->second, "args.spacing_ms", l.min_spacing_ms, l.max_spacing_ms);
    if (auto it = args->find("size"); it != args->end())
      a.size = bounded_uint(it->second, "args.size", l.min_size, l.max_size);
    if (auto it = args->find("timeout_ms"); it != args->end())
      a.timeout_ms =
          bounded_uint(it->second, "args.timeout_ms", l.min_timeout_ms, l.max_timeout_ms);
    if (auto it = args->find("port"); it != args->end()) {
      if (a.method != "tcp") bad_argument("args.port: only the tcp method takes a port");
      a.port = bounded_uint(it->second, "args.port", 1, 65535);
    }
  }
  if (a.method != "tcp") a.port = 0;
  // Defaults must fit the configured limits too.
  check_range(a.count, "args.count", 1, l.max_count);
  check_range(a.spacing_ms, "args.spacing_ms", l.min_spacing_ms, l.max_spacing_ms);
  check_range(a.size, "args.size", l.min_size, l.max_size);
  check_range(a.timeout_ms, "args.timeout_ms", l.min_timeout_ms, l.max_timeout_ms);
  return a;
}

AbwArgs parse_abw_args(const xmlrpc_c::cstruct* args, const Limits& limits, AbwArgs a = {}) {
  const AbwLimits& l = limits.abw;
  if (args) {
    check_keys(*args, "args.", {"max_rate_bps", "max_bytes", "max_duration_ms"});
    if (auto it = args->find("max_rate_bps"); it != args->end())
      a.max_rate_bps = bounded_u64(it->second, "args.max_rate_bps", 100'000, l.max_rate_bps);
    if (auto it = args->find("max_bytes"); it != args->end())
      a.max_bytes = bounded_u64(it->second, "args.max_bytes", 100'000, l.max_bytes);
    if (auto it = args->find("max_duration_ms"); it != args->end())
      a.max_duration_ms = bounded_uint(it->second, "args.max_duration_ms", 200, l.max_duration_ms);
  }
  check_range64(a.max_rate_bps, "args.max_rate_bps", 100'000, l.max_rate_bps);
  check_range64(a.max_bytes, "args.max_bytes", 100'000, l.max_bytes);
  check_range(a.max_duration_ms, "args.max_duration_ms", 200, l.max_duration_ms);
  return a;
}

ThroughputArgs parse_throughput_args(const xmlrpc_c::cstruct* args, const Limits& limits,
                                     ThroughputArgs a = {}) {
  const ThroughputLimits& l = limits.throughput;
  if (args) {
    check_keys(*args, "args.", {"duration_ms", "max_bytes"});
    if (auto it = args->find("duration_ms"); it != args->end())
      a.duration_ms = bounded_uint(it->second, "args.duration_ms", 100, l.max_duration_ms);
    if (auto it = args->find("max_bytes"); it != args->end())
      a.max_bytes = bounded_u64(it->second, "args.max_bytes", 1, l.max_bytes);
  }
  check_range(a.duration_ms, "args.duration_ms", 100, l.max_duration_ms);
  check_range64(a.max_bytes, "args.max_bytes", 1, l.max_bytes);
  return a;
}

// "latency, abw, throughput", for messages.
std::string tool_names() {
  std::string out;
  for (Tool t : kAllTools) out += fmt::format("{}{}", out.empty() ? "" : ", ", tool_name(t));
  return out;
}

// Parses `args` for spec.tool into spec, starting from what spec has.
void parse_tool_args(const xmlrpc_c::cstruct* args, const Limits& limits, RequestSpec& spec) {
  switch (spec.tool) {
    case Tool::kAbw:
      spec.abw = parse_abw_args(args, limits, spec.abw);
      return;
    case Tool::kThroughput:
      spec.throughput = parse_throughput_args(args, limits, spec.throughput);
      return;
    case Tool::kLatency:
      spec.latency = parse_latency_args(args, limits, spec.latency);
      return;
  }
}

// The shortest interval for a tool and role.
double min_interval(Tool tool, const Config& config, Role role) {
  double m = config.limits_for(role).min_interval_s;
  if (tool == Tool::kAbw) m = std::max(m, config.limits.abw.min_interval_s);
  if (tool == Tool::kThroughput) m = std::max(m, config.limits.throughput.min_interval_s);
  return m;
}

double parse_interval(const V& v, Tool tool, const Config& config, Role role) {
  double x = get_number(v, "interval");
  const double low = min_interval(tool, config, role);
  if (x < low)
    bad_argument(
        fmt::format("interval: {} s is below the limit of {} s", fmt_number(x), fmt_number(low)));
  if (x > config.limits.max_interval_s)
    bad_argument(fmt::format("interval: {} s is above the limit of {} s", fmt_number(x),
                             fmt_number(config.limits.max_interval_s)));
  return x;
}

double parse_duration(const V& v, const Config& config, Role role) {
  double x = get_number(v, "duration");
  const double high = config.limits_for(role).max_duration_s;
  if (x <= 0) bad_argument(fmt::format("duration: {} s is not positive", fmt_number(x)));
  if (x > high)
    bad_argument(
        fmt::format("duration: {} s is above the limit of {} s", fmt_number(x), fmt_number(high)));
  return x;
}

std::int32_t parse_priority(const V& v) {
  std::int64_t x = get_int(v, "priority");
  if (x < -1000 || x > 1000) bad_argument(fmt::format("priority: {} is outside -1000..1000", x));
  return static_cast<std::int32_t>(x);
}

std::vector<Path> parse_nodes(const V& v, const Config& config, std::uint32_t max_paths) {
  auto nodes = get_array(v, "nodes");
  std::vector<std::string> ids;
  std::set<std::string> seen;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    std::string where = fmt::format("nodes[{}]", i);
    std::string id = node_arg(nodes[i], where, config);
    if (!seen.insert(id).second)
      bad_argument(fmt::format("{}: node {} is listed twice", where, in_quotes(id)));
    ids.push_back(id);
  }
  if (ids.size() < 2)
    bad_argument(fmt::format("nodes: at least 2 nodes are needed, got {}", ids.size()));
  const std::uint64_t count = ids.size() * (ids.size() - 1);
  if (count > max_paths)
    bad_argument(
        fmt::format("nodes: {} nodes make {} paths, above the limit of {} paths per request",
                    ids.size(), count, max_paths));
  std::vector<Path> paths;
  for (const auto& s : ids)
    for (const auto& d : ids)
      if (s != d) paths.push_back({s, d});
  return paths;
}

std::vector<Path> parse_paths(const V& v, const Config& config, std::uint32_t max_paths) {
  auto items = get_array(v, "paths");
  if (items.empty()) bad_argument("paths: at least 1 path is needed");
  if (items.size() > max_paths)
    bad_argument(fmt::format("paths: {} paths are above the limit of {} paths per request",
                             items.size(), max_paths));
  std::vector<Path> paths;
  std::set<Path> seen;
  for (std::size_t i = 0; i < items.size(); ++i) {
    std::string where = fmt::format("paths[{}]", i);
    auto pair = get_array(items[i], where);
    if (pair.size() != 2)
      bad_argument(fmt::format("{}: expected [src, dst], got {} elements", where, pair.size()));
    Path p{node_arg(pair[0], where + "[0]", config), node_arg(pair[1], where + "[1]", config)};
    if (p.src == p.dst)
      bad_argument(fmt::format("{}: source and destination are both {}", where, in_quotes(p.src)));
    if (!seen.insert(p).second)
      bad_argument(fmt::format("{}: path {}>{} is listed twice", where, p.src, p.dst));
    paths.push_back(std::move(p));
  }
  return paths;
}

// Days since 1970-01-01 of a civil date (proleptic Gregorian).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

}  // namespace

RequestSpec parse_spec(const xmlrpc_c::value& value, const Config& config, Role role) {
  auto s = get_struct(value, "spec");
  check_keys(s, "spec.",
             {"tool", "nodes", "paths", "interval", "mode", "duration", "args", "priority", "netns",
              "dry_run"});
  RequestSpec spec;
  auto tool = s.find("tool");
  if (tool == s.end()) bad_argument(fmt::format("tool: missing (supported: {})", tool_names()));
  const std::string tool_text = get_string(tool->second, "tool");
  if (auto t = parse_tool(tool_text))
    spec.tool = *t;
  else
    bad_argument(fmt::format("tool: {} is not a supported tool (supported: {})",
                             in_quotes(tool_text), tool_names()));

  if (auto it = s.find("mode"); it != s.end()) {
    std::string mode = get_string(it->second, "mode");
    if (mode == "continuous")
      spec.mode = Mode::continuous;
    else if (mode == "oneshot")
      spec.mode = Mode::oneshot;
    else
      bad_argument(
          fmt::format("mode: {} is not a mode (expected continuous or oneshot)", in_quotes(mode)));
  }

  if (auto it = s.find("interval"); it != s.end()) {
    spec.interval_s = parse_interval(it->second, spec.tool, config, role);
  } else if (spec.mode == Mode::continuous) {
    bad_argument("interval: missing (required for continuous requests)");
  }

  if (auto it = s.find("duration"); it != s.end()) {
    if (spec.mode != Mode::continuous)
      bad_argument("duration: only continuous requests have a duration");
    spec.duration_s = parse_duration(it->second, config, role);
  }
  if (auto it = s.find("priority"); it != s.end()) spec.priority = parse_priority(it->second);
  if (auto it = s.find("netns"); it != s.end()) {
    spec.netns = get_string(it->second, "netns");
    if (spec.netns.size() > 255 || spec.netns.find('\0') != std::string::npos ||
        spec.netns.find("..") != std::string::npos ||
        spec.netns.find_first_of(" \t\n") != std::string::npos ||
        (spec.netns.find('/') != std::string::npos && spec.netns.front() != '/'))
      bad_argument(fmt::format("netns: {} is neither a name under /run/netns nor an absolute path",
                               in_quotes(spec.netns)));
    check_netns_allowed(spec.netns, config.limits_for(role));
  }
  if (auto it = s.find("dry_run"); it != s.end())
    expect_type(it->second, V::TYPE_BOOLEAN, "dry_run", "a boolean");

  const std::uint32_t max_paths = config.limits_for(role).max_paths_per_request;
  const auto nodes = s.find("nodes");
  const auto paths = s.find("paths");
  if (nodes != s.end() && paths != s.end())
    bad_argument("nodes, paths: give one of them, not both");
  if (nodes == s.end() && paths == s.end()) bad_argument("nodes, paths: one of them is required");
  spec.paths = nodes != s.end() ? parse_nodes(nodes->second, config, max_paths)
                                : parse_paths(paths->second, config, max_paths);

  std::optional<xmlrpc_c::cstruct> args;
  if (auto it = s.find("args"); it != s.end()) args = get_struct(it->second, "args");
  parse_tool_args(args ? &*args : nullptr, config.limits, spec);
  return spec;
}

bool is_dry_run(const xmlrpc_c::value& value) {
  if (value.type() != V::TYPE_STRUCT) return false;
  auto s = xmlrpc_c::value_struct(value).cvalue();
  auto it = s.find("dry_run");
  return it != s.end() && it->second.type() == V::TYPE_BOOLEAN &&
         xmlrpc_c::value_boolean(it->second).cvalue();
}

Edit parse_edit(const xmlrpc_c::value& value, const RequestSpec& current, const Config& config,
                Role role) {
  auto s = get_struct(value, "changes");
  check_keys(s, "changes.", {"interval", "duration", "priority", "args", "for"});
  if (s.empty())
    bad_argument("changes: nothing to change (keys: interval, duration, priority, args, for)");
  Edit e;
  e.spec = current;
  if (auto it = s.find("interval"); it != s.end()) {
    if (current.mode != Mode::continuous)
      bad_argument("interval: a one-shot request has no interval to edit");
    e.spec.interval_s = parse_interval(it->second, current.tool, config, role);
  }
  if (auto it = s.find("duration"); it != s.end()) {
    if (current.mode != Mode::continuous)
      bad_argument("duration: only continuous requests have a duration");
    e.spec.duration_s = parse_duration(it->second, config, role);
  }
  if (auto it = s.find("priority"); it != s.end()) e.spec.priority = parse_priority(it->second);
  if (auto it = s.find("args"); it != s.end()) {
    auto args = get_struct(it->second, "args");
    parse_tool_args(&args, config.limits, e.spec);
  }
  if (auto it = s.find("for"); it != s.end()) {
    double x = get_number(it->second, "for");
    if (x <= 0) bad_argument(fmt::format("for: {} s is not positive", fmt_number(x)));
    if (x > config.limits_for(role).max_duration_s)
      bad_argument(fmt::format("for: {} s is above the limit of {} s", fmt_number(x),
                               fmt_number(config.limits_for(role).max_duration_s)));
    e.for_s = x;
  }
  return e;
}

UtcNs parse_time(const xmlrpc_c::value& v, const std::string& name) {
  // Bounded so that nanoseconds fit in 64 bits (years 1970..2262).
  constexpr double kMaxSeconds = 9.2e9;
  double seconds = 0;
  if (v.type() == V::TYPE_DATETIME) {
    xmlrpc_datetime dt = xmlrpc_c::value_datetime(v);
    if (dt.Y < 1970 || dt.Y > 2200 || dt.M < 1 || dt.M > 12 || dt.D < 1 || dt.D > 31 || dt.h > 23 ||
        dt.m > 59 || dt.s > 60)
      bad_argument(fmt::format("{}: dateTime.iso8601 out of range (years 1970..2200)", name));
    std::int64_t days = days_from_civil(dt.Y, dt.M, dt.D);
    std::int64_t secs = days * 86400 + dt.h * 3600 + dt.m * 60 + dt.s;
    return secs * 1'000'000'000 + static_cast<std::int64_t>(dt.u) * 1000;
  }
  if (v.type() != V::TYPE_INT && v.type() != V::TYPE_I8 && v.type() != V::TYPE_DOUBLE)
    bad_argument(
        fmt::format("{}: expected epoch seconds or dateTime.iso8601, got {}", name, type_name(v)));
  seconds = get_number(v, name);
  if (seconds < 0 || seconds > kMaxSeconds)
    bad_argument(fmt::format("{}: {} is not a time between 1970 and 2261 in epoch seconds", name,
                             fmt_number(seconds)));
  return static_cast<UtcNs>(std::llround(seconds * 1e9));
}

std::uint64_t parse_id_arg(const xmlrpc_c::value& value, const std::string& name) {
  std::string id = get_string(value, name);
  auto num = parse_request_id(id);
  if (!num) bad_argument(fmt::format("{}: {} is not a request id (like r12)", name, in_quotes(id)));
  return *num;
}

}  // namespace flexmon::manager
