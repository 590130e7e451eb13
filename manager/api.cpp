#include "manager/api.h"

#include <fmt/format.h>

#include "common/tool.h"
#include "manager/fault_codes.h"
#include "manager/spec.h"
#include "manager/xmlrpc_values.h"

namespace flexmon::manager {

namespace {

using xmlrpc_c::value;

value seconds(UtcNs t) { return xmlrpc_c::value_double(static_cast<double>(t) / 1e9); }
value str(std::string_view s) { return xmlrpc_c::value_string(std::string(s)); }
value integer(std::int64_t x) {
  // XML-RPC ints are 32-bit; counts here are far below that.
  return xmlrpc_c::value_int(static_cast<int>(std::clamp<std::int64_t>(x, 0, INT32_MAX)));
}

void expect_params(const xmlrpc_c::paramList& params, std::size_t min, std::size_t max,
                   const std::string& method, const std::string& names) {
  if (params.size() < min || params.size() > max)
    throw ApiFault(kBadArgument,
                   fmt::format("{}: expected {} argument{} ({}), got {}", method,
                               min == max ? std::to_string(min) : fmt::format("{} to {}", min, max),
                               max == 1 ? "" : "s", names, params.size()));
}

value dbl(double x) { return xmlrpc_c::value_double(x); }

value cost_value(const Cost& c) {
  return xmlrpc_c::value_struct({{"bps", dbl(c.bps)}, {"bytes_per_day", dbl(c.bytes_per_day)}});
}

value node_value(const NodeView& n) {
  xmlrpc_c::cstruct s{{"id", str(n.id)},
                      {"site", str(n.site)},
                      {"address", str(n.address)},
                      {"state", str(liveness_name(n.state))},
                      {"load", xmlrpc_c::value_double(n.load)},
                      {"streams", integer(n.streams)},
                      {"skipped_slots", dbl(static_cast<double>(n.skipped_slots))},
                      {"shortfall", dbl(n.shortfall)},
                      {"behind_streams", integer(n.behind_streams)},
                      {"paused_streams", integer(n.paused_streams)},
                      {"cost", cost_value(n.cost)}};
  if (n.last_contact) s.emplace("last_contact", seconds(*n.last_contact));
  return xmlrpc_c::value_struct(s);
}

const char* kSpecHelp =
    "probe.request(spec) -> {id, paths, streams, new_streams, shared_streams, cost, added}. Asks "
    "for measurements. spec: tool ('latency', 'abw', 'throughput'), nodes (array of node ids: "
    "every ordered pair) or paths (array of [src, dst]), interval (seconds; required for "
    "continuous), mode ('continuous' default or 'oneshot'), duration (seconds, continuous only), "
    "priority (-1000..1000, default 0), netns (string), dry_run (boolean: answer what would be "
    "admitted and its cost without admitting), args (latency: method udp|icmp|tcp, count, "
    "spacing_ms, size, timeout_ms, port for tcp; abw: max_rate_bps, max_bytes, max_duration_ms; "
    "throughput: duration_ms, max_bytes). Faults: 4001 bad argument, 4002 unknown node, 4010 not "
    "authenticated, 4290 per-user limit, 4291 bandwidth budget. See schemas/xmlrpc-api.md.";

// Every authenticated user reads every result: see "Who reads what" in
// schemas/xmlrpc-api.md.
const char* kFilterHelp =
    "filter (a struct, every key optional; unknown keys are refused): src, dst (node ids), "
    "site (either end is a node of this site), from (inclusive), to (exclusive) as epoch "
    "seconds or dateTime.iso8601 UTC, status (ok, timeout, unreachable, resolve-failure, "
    "refused, error)";

std::string query_help(QueryKind kind) {
  const std::string name(query_method_name(kind));
  if (kind == QueryKind::summary)
    return fmt::format(
        "query.summary([filter]) -> array, one struct per path (tool, src, dst) with results in "
        "the range, sorted by tool, src, dst: count, ok, sent, received, loss (0..1, latency), "
        "rtt_min_ms, rtt_p50_ms, rtt_p90_ms, rtt_p99_ms (over every received packet, within "
        "0.5 %), bandwidth_median_bps (abw estimate or throughput), first, last (epoch seconds). "
        "{}; also tool (latency, abw, throughput). Reads the cache and the archive as one "
        "table. Faults: 4001, 4002, 4010, 5030 archive unreadable. See schemas/xmlrpc-api.md.",
        kFilterHelp);
  if (kind == QueryKind::paths)
    return fmt::format(
        "query.paths([filter]) -> array of {{tool, src, dst, count, first, last}}: every path "
        "with results in the range, sorted by tool, src, dst. {}; also tool (latency, abw, "
        "throughput). Faults: 4001, 4002, 4010, 5030. See schemas/xmlrpc-api.md.",
        kFilterHelp);
  std::string fields =
      kind == QueryKind::latency
          ? "sent, received, duplicates, rtt_min_ms, rtt_avg_ms, rtt_median_ms, rtt_max_ms, "
            "rtt_stddev_ms (absent when nothing came back), rtts_ms (per packet, -1 = lost)"
      : kind == QueryKind::abw ? "estimate_bps, lower_bps, upper_bps, bytes_sent, duration_ms"
                               : "throughput_bps, bytes_sent, duration_ms";
  return fmt::format(
      "{}([filter]) -> {{rows, next_cursor}}. {} results, newest first (time descending, "
      "then node, boot_epoch, seq), from the cache and the archive as one table without "
      "duplicates. Each row: node, boot_epoch, seq, stream, tool, src, dst, time (epoch "
      "seconds), start_ns, status, error (when status is error), {}. {}; also limit (1..10000, "
      "default 1000), cursor (the next_cursor of the previous page: the next page starts "
      "strictly after it; empty next_cursor = last page), latest (boolean: only the newest "
      "result of each path, one page). Faults: 4001 (naming the key: bad filter, cursor, "
      "limit), 4002 unknown node, 4010, 5030 archive unreadable. See schemas/xmlrpc-api.md.",
      name,
      kind == QueryKind::latency ? "Latency"
      : kind == QueryKind::abw   ? "Available-bandwidth"
                                 : "Throughput",
      fields, kFilterHelp);
}

// Who may call what (schemas/xmlrpc-api.md, "Roles"). Reading results and
// nodes is for everyone; asking for measurements and managing requests is
// for users, for flexmon's own services (which ask through the same
// admission path as a user) and for admins.
const std::vector<Role> kEveryone{Role::reader, Role::user, Role::service, Role::admin};
const std::vector<Role> kRequesters{Role::user, Role::service, Role::admin};

std::string role_list(const std::vector<Role>& roles) {
  std::string out;
  for (Role r : roles) out += fmt::format("{}{}", out.empty() ? "" : ", ", role_name(r));
  return out;
}

// The request that the argument `id` names, when the caller may see it: it
// is theirs, or the caller is an admin. Throws 4001, 4040, 4030.
Request visible_request(const RequestBook& book, const xmlrpc_c::value& id,
                        const UserConfig& caller) {
  const auto num = parse_id_arg(id, "id");
  auto r = book.find(num);
  if (!r) throw ApiFault(kNoSuchRequest, fmt::format("no request r{}", num));
  if (r->owner != caller.name && caller.role != Role::admin)
    throw ApiFault(kNotPermitted, fmt::format("request r{} belongs to another user", num));
  return std::move(*r);
}

// A request as probe.get returns it, with its share of the running streams.
value charged_request_value(const RequestBook& book, const Request& r) {
  const Cost charged = book.charged(r);
  return request_value(r, &charged);
}

// Wraps every method's run or write in the one role check, and says in its
// help who may call it.
void enforce_roles(std::vector<ApiMethod>& methods) {
  for (auto& m : methods) {
    if (m.roles.empty()) throw std::logic_error(m.name + ": no role may call it");
    if (!m.run == !m.write)
      throw std::logic_error(m.name + ": a method has either run or write, not both");
    m.help += " Roles: " + role_list(m.roles) + ".";
    auto check = [name = m.name, roles = m.roles](const UserConfig& caller) {
      if (std::find(roles.begin(), roles.end(), caller.role) == roles.end())
        throw ApiFault(kNotPermitted, role_refusal(name, caller.role, roles));
    };
    if (m.run)
      m.run = [check, run = std::move(m.run)](const UserConfig& caller,
                                              const xmlrpc_c::paramList& p) {
        check(caller);
        return run(caller, p);
      };
    if (m.write)
      m.write = [check, write = std::move(m.write)](const UserConfig& caller,
                                                    const xmlrpc_c::paramList& p, XmlAnswer& out) {
        check(caller);
        write(caller, p, out);
      };
  }
}

}  // namespace

std::string role_refusal(const std::string& method, Role caller_role,
                         const std::vector<Role>& allowed) {
  return fmt::format("{}: not permitted for role {} (roles that may call it: {})", method,
                     role_name(caller_role), role_list(allowed));
}

value request_value(const Request& r, const Cost* charged) {
  xmlrpc_c::cstruct args;
  switch (r.spec.tool) {
    case Tool::kAbw: {
      const auto& a = r.spec.abw;
      args = {{"max_rate_bps", dbl(static_cast<double>(a.max_rate_bps))},
              {"max_bytes", dbl(static_cast<double>(a.max_bytes))},
              {"max_duration_ms", integer(a.max_duration_ms)}};
      break;
    }
    case Tool::kThroughput: {
      const auto& t = r.spec.throughput;
      args = {{"duration_ms", integer(t.duration_ms)},
              {"max_bytes", dbl(static_cast<double>(t.max_bytes))}};
      break;
    }
    case Tool::kLatency: {
      const auto& a = r.spec.latency;
      args = {{"method", str(a.method)},
              {"count", integer(a.count)},
              {"spacing_ms", integer(a.spacing_ms)},
              {"size", integer(a.size)},
              {"timeout_ms", integer(a.timeout_ms)}};
      if (a.method == "tcp") args.emplace("port", integer(a.port));
      break;
    }
  }
  xmlrpc_c::carray paths;
  for (const auto& p : r.spec.paths)
    paths.push_back(xmlrpc_c::value_array({str(p.src), str(p.dst)}));
  xmlrpc_c::cstruct s{{"id", str(r.id())},
                      {"owner", str(r.owner)},
                      {"tool", str(tool_name(r.spec.tool))},
                      {"mode", str(mode_name(r.spec.mode))},
                      {"state", str(state_name(r.state))},
                      {"interval", xmlrpc_c::value_double(r.spec.interval_s)},
                      {"priority", xmlrpc_c::value_int(r.spec.priority)},
                      {"args", xmlrpc_c::value_struct(args)},
                      {"paths", xmlrpc_c::value_array(paths)},
                      {"created", seconds(r.created_ns)}};
  if (!r.spec.netns.empty()) s.emplace("netns", str(r.spec.netns));
  if (r.spec.duration_s) s.emplace("duration", xmlrpc_c::value_double(*r.spec.duration_s));
  if (r.ends_ns) s.emplace("ends", seconds(*r.ends_ns));
  if (r.revert)
    s.emplace("temporary",
              xmlrpc_c::value_struct({{"until", seconds(r.revert->at_ns)},
                                      {"interval", dbl(r.revert->spec.interval_s)},
                                      {"priority", xmlrpc_c::value_int(r.revert->spec.priority)}}));
  if (charged) s.emplace("charged", cost_value(*charged));
  return xmlrpc_c::value_struct(s);
}

std::vector<ApiMethod> api_methods(const Config& config, RequestBook& book, const Fleet& fleet,
                                   QueryService& queries) {
  std::vector<ApiMethod> methods;

  methods.push_back({"probe.request", "S:S", kSpecHelp,
                     [&config, &book](const UserConfig& caller, const xmlrpc_c::paramList& p) {
                       expect_params(p, 1, 1, "probe.request", "spec");
                       RequestSpec spec = parse_spec(p[0], config, caller.role);
                       const bool dry_run = is_dry_run(p[0]);
                       AdmissionAnswer a = book.admit(caller, spec, dry_run);
                       xmlrpc_c::cstruct out{
                           {"paths", integer(static_cast<std::int64_t>(a.paths))},
                           {"streams", integer(static_cast<std::int64_t>(a.paths))},
                           {"new_streams", integer(static_cast<std::int64_t>(a.new_streams))},
                           {"shared_streams", integer(static_cast<std::int64_t>(a.shared_streams))},
                           {"cost", cost_value(a.standalone)},
                           {"added", cost_value(a.added)}};
                       if (a.request) out.emplace("id", str(a.request->id()));
                       if (dry_run) {
                         out.emplace("dry_run", xmlrpc_c::value_boolean(true));
                         out.emplace("admitted", xmlrpc_c::value_boolean(a.admitted));
                         if (!a.admitted) {
                           out.emplace("fault_code", xmlrpc_c::value_int(a.refusal_code));
                           out.emplace("refusal", str(a.refusal));
                         }
                       }
                       return value(xmlrpc_c::value_struct(out));
                     },
                     nullptr, kRequesters});

  methods.push_back(
      {"probe.edit", "S:sS",
       "probe.edit(id, changes) -> struct (as probe.get). Changes an active request: changes "
       "has any of interval, duration, priority, args (merged into the current ones) and for "
       "(seconds: the change is temporary, then the request returns to what it was). Checked "
       "like probe.request. Faults: 4001, 4010, 4030, 4040, 4290, 4291.",
       [&config, &book](const UserConfig& caller, const xmlrpc_c::paramList& p) {
         expect_params(p, 2, 2, "probe.edit", "id, changes");
         const Request r = visible_request(book, p[0], caller);
         const UserConfig* owner = config.find_user(r.owner);
         Edit e = parse_edit(p[1], r.spec, config, owner ? owner->role : caller.role);
         return charged_request_value(book, book.edit(r.num, caller, e.spec, e.for_s));
       },
       nullptr, kRequesters});

  methods.push_back(
      {"user.usage", "S:,S:s",
       "user.usage([user]) -> struct. What the caller (an admin may name a user) uses of each "
       "limit now: requests, paths (each {used, limit}), bps and bytes_per_day (each {reserved: "
       "sum of the requests' costs alone, charged: their shares of the running streams, "
       "budget: 0 = unlimited}). Faults: 4001, 4010, 4030.",
       [&config, &book](const UserConfig& caller, const xmlrpc_c::paramList& p) {
         expect_params(p, 0, 1, "user.usage", "user");
         std::string name = caller.name;
         if (p.size() == 1) {
           name = get_string(p[0], "user");
           if (name != caller.name && caller.role != Role::admin)
             throw ApiFault(kNotPermitted, "user: only an admin may read another user's usage");
           if (!config.find_user(name)) throw ApiFault(kBadArgument, "user: no such user");
         }
         Usage u = book.usage(name);
         auto pair = [](double used, double limit) {
           return xmlrpc_c::value_struct({{"used", dbl(used)}, {"limit", dbl(limit)}});
         };
         auto money = [](double reserved, double charged, double budget) {
           return xmlrpc_c::value_struct(
               {{"reserved", dbl(reserved)}, {"charged", dbl(charged)}, {"budget", dbl(budget)}});
         };
         return value(xmlrpc_c::value_struct(
             {{"user", str(u.user)},
              {"requests", pair(static_cast<double>(u.requests), u.limits.max_requests_per_user)},
              {"paths", pair(static_cast<double>(u.paths), u.limits.max_paths_per_user)},
              {"bps", money(u.reserved.bps, u.charged.bps, u.budget.bps)},
              {"bytes_per_day",
               money(u.reserved.bytes_per_day, u.charged.bytes_per_day, u.budget.bytes_per_day)},
              {"min_interval", dbl(u.limits.min_interval_s)},
              {"max_duration", dbl(u.limits.max_duration_s)},
              {"max_paths_per_request", dbl(u.limits.max_paths_per_request)}}));
       },
       nullptr, kRequesters});

  methods.push_back(
      {"probe.get", "S:s",
       "probe.get(id) -> struct. One request: id, owner, tool, mode, state (active, cancelled, "
       "expired, done), interval, priority, netns, duration, args, paths, created, ends, "
       "temporary (a pending revert: until, interval, priority), charged (its share of the "
       "running streams: bps, bytes_per_day). Faults: 4001, 4010, 4030 not yours, 4040 no such "
       "request.",
       [&book](const UserConfig& caller, const xmlrpc_c::paramList& p) {
         expect_params(p, 1, 1, "probe.get", "id");
         return charged_request_value(book, visible_request(book, p[0], caller));
       },
       nullptr, kRequesters});

  methods.push_back(
      {"probe.list", "A:",
       "probe.list() -> array. The caller's requests (every request for an admin), oldest "
       "first, each as probe.get returns it. Faults: 4010.",
       [&book](const UserConfig& caller, const xmlrpc_c::paramList& p) {
         expect_params(p, 0, 0, "probe.list", "none");
         auto requests =
             book.list(caller.role == Role::admin ? std::nullopt : std::optional(caller.name));
         xmlrpc_c::carray out;
         for (const auto& r : requests) out.push_back(charged_request_value(book, r));
         return value(xmlrpc_c::value_array(out));
       },
       nullptr, kRequesters});

  methods.push_back(
      {"probe.cancel", "S:s",
       "probe.cancel(id) -> {id, state}. Cancels an active request of the caller (an admin may "
       "cancel any); a finished request is returned in its state. Faults: 4001, 4010, 4030, "
       "4040.",
       [&book](const UserConfig& caller, const xmlrpc_c::paramList& p) {
         expect_params(p, 1, 1, "probe.cancel", "id");
         Request r = book.cancel(parse_id_arg(p[0], "id"), caller);
         return value(
             xmlrpc_c::value_struct({{"id", str(r.id())}, {"state", str(state_name(r.state))}}));
       },
       nullptr, kRequesters});

  methods.push_back({"node.list", "A:",
                     "node.list() -> array of {id, site, address, state (alive, suspect, "
                     "dead), last_contact, load, streams, skipped_slots, shortfall, "
                     "behind_streams, paused_streams, cost}. Faults: 4010.",
                     [&fleet](const UserConfig&, const xmlrpc_c::paramList& p) {
                       expect_params(p, 0, 0, "node.list", "none");
                       xmlrpc_c::carray out;
                       for (const auto& n : fleet.nodes()) out.push_back(node_value(n));
                       return value(xmlrpc_c::value_array(out));
                     },
                     nullptr, kEveryone});

  for (QueryKind kind : {QueryKind::latency, QueryKind::abw, QueryKind::throughput,
                         QueryKind::summary, QueryKind::paths}) {
    ApiMethod m;
    m.name = std::string(query_method_name(kind));
    m.signature = kind == QueryKind::summary || kind == QueryKind::paths ? "A:S,A:" : "S:S,S:";
    m.help = query_help(kind);
    m.write = [&config, &queries, kind](const UserConfig&, const xmlrpc_c::paramList& p,
                                        XmlAnswer& out) {
      queries.run(kind, parse_query_args(kind, p, config), out);
    };
    m.roles = kEveryone;
    methods.push_back(std::move(m));
  }
  enforce_roles(methods);
  return methods;
}

}  // namespace flexmon::manager
