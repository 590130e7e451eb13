#include "manager/spec.h"

#include <cmath>
#include <ctime>
#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>

namespace flexmon::manager {

namespace {

using V = xmlrpc_c::value;

[[noreturn]] void bad(const std::string& message) { throw ApiFault(kBadArgument, message); }

// A user's string, shortened and made printable for a message.
std::string sanitized(const std::string& s) {
  std::string out = s.size() > 64 ? s.substr(0, 64) + "..." : s;
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return out;
}

std::string quote(const std::string& s) { return "'" + sanitized(s) + "'"; }

std::string fmt_number(double v) { return fmt::format("{}", v); }

void expect_type(const V& v, V::type_t type, const std::string& name, const char* what) {
  if (v.type() != type) bad(fmt::format("{}: expected {}, got {}", name, what, type_name(v)));
}

std::string get_string(const V& v, const std::string& name) {
  expect_type(v, V::TYPE_STRING, name, "a string");
  return xmlrpc_c::value_string(v).cvalue();
}

xmlrpc_c::cstruct get_struct(const V& v, const std::string& name) {
  expect_type(v, V::TYPE_STRUCT, name, "a struct");
  return xmlrpc_c::value_struct(v).cvalue();
}

xmlrpc_c::carray get_array(const V& v, const std::string& name) {
  expect_type(v, V::TYPE_ARRAY, name, "an array");
  return xmlrpc_c::value_array(v).cvalue();
}

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
      bad(fmt::format("{}: expected a number of seconds, got {}", name, type_name(v)));
  }
  if (!std::isfinite(d)) bad(fmt::format("{}: not a finite number", name));
  return d;
}

std::int64_t get_int(const V& v, const std::string& name) {
  switch (v.type()) {
    case V::TYPE_INT:
      return xmlrpc_c::value_int(v).cvalue();
    case V::TYPE_I8:
      return xmlrpc_c::value_i8(v).cvalue();
    default:
      bad(fmt::format("{}: expected an int, got {}", name, type_name(v)));
  }
}

void check_keys(const xmlrpc_c::cstruct& s, const std::string& prefix,
                const std::set<std::string>& allowed) {
  for (const auto& [key, value] : s) {
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      bad(fmt::format("{}{}: unknown key (expected one of {})", prefix, sanitized(key), list));
    }
  }
}

std::uint32_t bounded_uint(const V& v, const std::string& name, std::uint32_t min,
                           std::uint32_t max) {
  std::int64_t x = get_int(v, name);
  if (x < min) bad(fmt::format("{}: {} is below the limit of {}", name, x, min));
  if (x > max) bad(fmt::format("{}: {} is above the limit of {}", name, x, max));
  return static_cast<std::uint32_t>(x);
}

void check_range(std::uint32_t x, const std::string& name, std::uint32_t min, std::uint32_t max) {
  if (x < min) bad(fmt::format("{}: {} (the default) is below the limit of {}", name, x, min));
  if (x > max) bad(fmt::format("{}: {} (the default) is above the limit of {}", name, x, max));
}

std::string node_arg(const V& v, const std::string& where, const Config& config) {
  std::string id = get_string(v, where);
  if (!config.find_node(id))
    throw ApiFault(kUnknownNode, fmt::format("unknown node {} in {}", quote(id), where));
  return id;
}

LatencyArgs parse_latency_args(const xmlrpc_c::cstruct* args, const Limits& limits) {
  LatencyArgs a;
  const LatencyLimits& l = limits.latency;
  if (args) {
    check_keys(*args, "args.", {"method", "count", "spacing_ms", "size", "timeout_ms"});
    if (auto it = args->find("method"); it != args->end()) {
      a.method = get_string(it->second, "args.method");
      if (a.method != "udp")
        bad(fmt::format("args.method: {} is not supported (supported: udp)", quote(a.method)));
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
  }
  // Defaults must fit the configured limits too.
  check_range(a.count, "args.count", 1, l.max_count);
  check_range(a.spacing_ms, "args.spacing_ms", l.min_spacing_ms, l.max_spacing_ms);
  check_range(a.size, "args.size", l.min_size, l.max_size);
  check_range(a.timeout_ms, "args.timeout_ms", l.min_timeout_ms, l.max_timeout_ms);
  return a;
}

std::vector<Path> parse_nodes(const V& v, const Config& config) {
  auto nodes = get_array(v, "nodes");
  std::vector<std::string> ids;
  std::set<std::string> seen;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    std::string where = fmt::format("nodes[{}]", i);
    std::string id = node_arg(nodes[i], where, config);
    if (!seen.insert(id).second) bad(fmt::format("{}: node {} is listed twice", where, quote(id)));
    ids.push_back(id);
  }
  if (ids.size() < 2) bad(fmt::format("nodes: at least 2 nodes are needed, got {}", ids.size()));
  const std::uint64_t count = ids.size() * (ids.size() - 1);
  if (count > config.limits.max_paths_per_request)
    bad(fmt::format("nodes: {} nodes make {} paths, above the limit of {} paths per request",
                    ids.size(), count, config.limits.max_paths_per_request));
  std::vector<Path> paths;
  for (const auto& s : ids)
    for (const auto& d : ids)
      if (s != d) paths.push_back({s, d});
  return paths;
}

std::vector<Path> parse_paths(const V& v, const Config& config) {
  auto items = get_array(v, "paths");
  if (items.empty()) bad("paths: at least 1 path is needed");
  if (items.size() > config.limits.max_paths_per_request)
    bad(fmt::format("paths: {} paths are above the limit of {} paths per request", items.size(),
                    config.limits.max_paths_per_request));
  std::vector<Path> paths;
  std::set<Path> seen;
  for (std::size_t i = 0; i < items.size(); ++i) {
    std::string where = fmt::format("paths[{}]", i);
    auto pair = get_array(items[i], where);
    if (pair.size() != 2)
      bad(fmt::format("{}: expected [src, dst], got {} elements", where, pair.size()));
    Path p{node_arg(pair[0], where + "[0]", config), node_arg(pair[1], where + "[1]", config)};
    if (p.src == p.dst)
      bad(fmt::format("{}: source and destination are both {}", where, quote(p.src)));
    if (!seen.insert(p).second)
      bad(fmt::format("{}: path {}>{} is listed twice", where, p.src, p.dst));
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

std::string type_name(const xmlrpc_c::value& v) {
  switch (v.type()) {
    case V::TYPE_INT:
      return "int";
    case V::TYPE_BOOLEAN:
      return "boolean";
    case V::TYPE_DOUBLE:
      return "double";
    case V::TYPE_DATETIME:
      return "dateTime.iso8601";
    case V::TYPE_STRING:
      return "string";
    case V::TYPE_BYTESTRING:
      return "base64";
    case V::TYPE_ARRAY:
      return "array";
    case V::TYPE_STRUCT:
      return "struct";
    case V::TYPE_NIL:
      return "nil";
    case V::TYPE_I8:
      return "i8";
    default:
      return "an unsupported type";
  }
}

RequestSpec parse_spec(const xmlrpc_c::value& value, const Config& config) {
  auto s = get_struct(value, "spec");
  check_keys(s, "spec.", {"tool", "nodes", "paths", "interval", "mode", "duration", "args"});
  RequestSpec spec;
  auto tool = s.find("tool");
  if (tool == s.end()) bad("tool: missing (supported: latency)");
  spec.tool = get_string(tool->second, "tool");
  if (spec.tool != "latency")
    bad(fmt::format("tool: {} is not a supported tool (supported: latency)", quote(spec.tool)));

  if (auto it = s.find("mode"); it != s.end()) {
    std::string mode = get_string(it->second, "mode");
    if (mode == "continuous")
      spec.mode = Mode::continuous;
    else if (mode == "oneshot")
      spec.mode = Mode::oneshot;
    else
      bad(fmt::format("mode: {} is not a mode (expected continuous or oneshot)", quote(mode)));
  }

  const Limits& limits = config.limits;
  if (auto it = s.find("interval"); it != s.end()) {
    double x = get_number(it->second, "interval");
    if (x < limits.min_interval_s)
      bad(fmt::format("interval: {} s is below the limit of {} s", fmt_number(x),
                      fmt_number(limits.min_interval_s)));
    if (x > limits.max_interval_s)
      bad(fmt::format("interval: {} s is above the limit of {} s", fmt_number(x),
                      fmt_number(limits.max_interval_s)));
    spec.interval_s = x;
  } else if (spec.mode == Mode::continuous) {
    bad("interval: missing (required for continuous requests)");
  }

  if (auto it = s.find("duration"); it != s.end()) {
    if (spec.mode != Mode::continuous) bad("duration: only continuous requests have a duration");
    double x = get_number(it->second, "duration");
    if (x <= 0) bad(fmt::format("duration: {} s is not positive", fmt_number(x)));
    if (x > limits.max_duration_s)
      bad(fmt::format("duration: {} s is above the limit of {} s", fmt_number(x),
                      fmt_number(limits.max_duration_s)));
    spec.duration_s = x;
  }

  const auto nodes = s.find("nodes");
  const auto paths = s.find("paths");
  if (nodes != s.end() && paths != s.end()) bad("nodes, paths: give one of them, not both");
  if (nodes == s.end() && paths == s.end()) bad("nodes, paths: one of them is required");
  spec.paths =
      nodes != s.end() ? parse_nodes(nodes->second, config) : parse_paths(paths->second, config);

  std::optional<xmlrpc_c::cstruct> args;
  if (auto it = s.find("args"); it != s.end()) args = get_struct(it->second, "args");
  spec.latency = parse_latency_args(args ? &*args : nullptr, limits);
  return spec;
}

UtcNs parse_time(const xmlrpc_c::value& v, const std::string& name) {
  // Bounded so that nanoseconds fit in 64 bits (years 1970..2262).
  constexpr double kMaxSeconds = 9.2e9;
  double seconds = 0;
  if (v.type() == V::TYPE_DATETIME) {
    xmlrpc_datetime dt = xmlrpc_c::value_datetime(v);
    if (dt.Y < 1970 || dt.Y > 2200 || dt.M < 1 || dt.M > 12 || dt.D < 1 || dt.D > 31 || dt.h > 23 ||
        dt.m > 59 || dt.s > 60)
      bad(fmt::format("{}: dateTime.iso8601 out of range (years 1970..2200)", name));
    std::int64_t days = days_from_civil(dt.Y, dt.M, dt.D);
    std::int64_t secs = days * 86400 + dt.h * 3600 + dt.m * 60 + dt.s;
    return secs * 1'000'000'000 + static_cast<std::int64_t>(dt.u) * 1000;
  }
  if (v.type() != V::TYPE_INT && v.type() != V::TYPE_I8 && v.type() != V::TYPE_DOUBLE)
    bad(fmt::format("{}: expected epoch seconds or dateTime.iso8601, got {}", name, type_name(v)));
  seconds = get_number(v, name);
  if (seconds < 0 || seconds > kMaxSeconds)
    bad(fmt::format("{}: {} is not a time between 1970 and 2261 in epoch seconds", name,
                    fmt_number(seconds)));
  return static_cast<UtcNs>(std::llround(seconds * 1e9));
}

LatencyQuery parse_latency_filter(const xmlrpc_c::value& value, const Config& config) {
  auto f = get_struct(value, "filter");
  check_keys(f, "filter.", {"src", "dst", "from", "to", "limit", "latest"});
  LatencyQuery q;
  if (auto it = f.find("src"); it != f.end()) q.src = node_arg(it->second, "src", config);
  if (auto it = f.find("dst"); it != f.end()) q.dst = node_arg(it->second, "dst", config);
  if (auto it = f.find("from"); it != f.end()) q.from = parse_time(it->second, "from");
  if (auto it = f.find("to"); it != f.end()) q.to = parse_time(it->second, "to");
  if (q.from && q.to && *q.from >= *q.to) bad("from: must be before to");
  if (auto it = f.find("limit"); it != f.end())
    q.limit = bounded_uint(it->second, "limit", 1, 10000);
  if (auto it = f.find("latest"); it != f.end()) {
    expect_type(it->second, V::TYPE_BOOLEAN, "latest", "a boolean");
    q.latest_per_path = xmlrpc_c::value_boolean(it->second).cvalue();
  }
  return q;
}

std::uint64_t parse_id_arg(const xmlrpc_c::value& value, const std::string& name) {
  std::string id = get_string(value, name);
  auto num = parse_request_id(id);
  if (!num) bad(fmt::format("{}: {} is not a request id (like r12)", name, quote(id)));
  return *num;
}

}  // namespace flexmon::manager
