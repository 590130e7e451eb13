#include "clients/cli.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <xmlrpc-c/girerr.hpp>

#include "clients/rpc_client.h"
#include "clients/table.h"
#include "common/clock.h"
#include "common/exit_status.h"

namespace flexmon {

namespace {

using Struct = std::map<std::string, xmlrpc_c::value>;

// Ends the command: the message goes to stderr and exit_status(code) is the
// exit status (kInvalidInput: a usage problem found after parsing, 64).
struct CommandError : std::runtime_error {
  CommandError(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code(code) {}
  ErrorCode code;
};

// The server answered with a fault (exit 1): its numbered code is in the
// message, for the user; the exit status only says "refused".
struct ServerRefusal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Parses "30s", "10m", "2h", "1d" (ago), or an ISO-8601 UTC time, into epoch
// seconds.
double parse_time(const std::string& text, double now) {
  static const std::map<char, double> units{{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
  if (!text.empty() && units.count(text.back())) {
    double amount = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size() - 1, amount);
    if (ec == std::errc() && end == text.data() + text.size() - 1 && amount >= 0)
      return now - amount * units.at(text.back());
  }
  std::tm tm{};
  const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (end && (*end == '\0' || std::string(end) == "Z")) return static_cast<double>(timegm(&tm));
  throw CommandError(
      ErrorCode::kInvalidInput,
      fmt::format(
          "'{}' is not a time: use a duration ago (30s, 10m, 2h, 1d) or YYYY-MM-DDTHH:MM:SSZ",
          text));
}

std::string get_string(const Struct& s, const std::string& key) {
  auto it = s.find(key);
  if (it == s.end()) return "";
  switch (it->second.type()) {
    case xmlrpc_c::value::TYPE_STRING:
      return xmlrpc_c::value_string(it->second).cvalue();
    case xmlrpc_c::value::TYPE_INT:
      return std::to_string(xmlrpc_c::value_int(it->second).cvalue());
    case xmlrpc_c::value::TYPE_DOUBLE:
      return fmt::format("{:g}", xmlrpc_c::value_double(it->second).cvalue());
    case xmlrpc_c::value::TYPE_BOOLEAN:
      return xmlrpc_c::value_boolean(it->second).cvalue() ? "true" : "false";
    default:
      return "";
  }
}

std::optional<double> get_number(const Struct& s, const std::string& key) {
  auto it = s.find(key);
  if (it == s.end()) return std::nullopt;
  if (it->second.type() == xmlrpc_c::value::TYPE_DOUBLE)
    return xmlrpc_c::value_double(it->second).cvalue();
  if (it->second.type() == xmlrpc_c::value::TYPE_INT)
    return xmlrpc_c::value_int(it->second).cvalue();
  return std::nullopt;
}

std::string format_epoch(std::optional<double> seconds) {
  if (!seconds) return "-";
  auto ns = static_cast<UtcNs>(std::llround(*seconds * 1e6)) * 1000;
  std::string full = format_utc(ns);  // ...T06:30:00.123456789Z
  return full.substr(0, 23) + "Z";    // milliseconds are enough on screen
}

std::string format_ms(std::optional<double> ms) {
  return ms ? fmt::format("{:.3f}", *ms) : std::string("-");
}

std::vector<Struct> as_structs(const xmlrpc_c::value& value) {
  std::vector<Struct> out;
  for (const auto& item : xmlrpc_c::value_array(value).cvalue())
    out.push_back(xmlrpc_c::value_struct(item).cvalue());
  return out;
}

std::string paths_text(const Struct& request) {
  auto it = request.find("paths");
  if (it == request.end()) return "";
  auto paths = xmlrpc_c::value_array(it->second).cvalue();
  std::vector<std::string> parts;
  for (const auto& path : paths) {
    auto pair = xmlrpc_c::value_array(path).cvalue();
    if (pair.size() == 2)
      parts.push_back(xmlrpc_c::value_string(pair[0]).cvalue() + ">" +
                      xmlrpc_c::value_string(pair[1]).cvalue());
  }
  if (parts.size() > 4)
    return fmt::format("{} ... ({} paths)", fmt::join(parts.begin(), parts.begin() + 3, " "),
                       parts.size());
  return fmt::format("{}", fmt::join(parts, " "));
}

void print_requests(const std::vector<Struct>& requests) {
  Table table({"ID", "OWNER", "TOOL", "MODE", "STATE", "INTERVAL", "CREATED", "ENDS", "PATHS"});
  for (const auto& r : requests)
    table.add({get_string(r, "id"), get_string(r, "owner"), get_string(r, "tool"),
               get_string(r, "mode"), get_string(r, "state"), get_string(r, "interval") + "s",
               format_epoch(get_number(r, "created")), format_epoch(get_number(r, "ends")),
               paths_text(r)});
  table.print(std::cout);
}

void print_results(const std::vector<Struct>& results) {
  Table table({"SRC", "DST", "TIME (UTC)", "STATUS", "SENT", "RECV", "LOSS", "MIN ms", "AVG ms",
               "MEDIAN ms", "MAX ms", "STDDEV ms"});
  for (const auto& r : results) {
    double sent = get_number(r, "sent").value_or(0);
    double received = get_number(r, "received").value_or(0);
    std::string loss = sent > 0 ? fmt::format("{:.1f}%", 100.0 * (sent - received) / sent) : "-";
    std::string status = get_string(r, "status");
    if (status == "error") status += ": " + get_string(r, "error");
    table.add({get_string(r, "src"), get_string(r, "dst"), format_epoch(get_number(r, "time")),
               status, get_string(r, "sent"), get_string(r, "received"), loss,
               format_ms(get_number(r, "rtt_min_ms")), format_ms(get_number(r, "rtt_avg_ms")),
               format_ms(get_number(r, "rtt_median_ms")), format_ms(get_number(r, "rtt_max_ms")),
               format_ms(get_number(r, "rtt_stddev_ms"))});
  }
  table.print(std::cout);
}

xmlrpc_c::value string_array(const std::vector<std::string>& items) {
  std::vector<xmlrpc_c::value> values;
  for (const auto& item : items) values.push_back(xmlrpc_c::value_string(item));
  return xmlrpc_c::value_array(values);
}

struct ProbeAddOptions {
  std::vector<std::string> nodes;
  std::vector<std::string> paths;
  double interval = 10;
  bool oneshot = false;
  std::optional<double> duration;
  std::string method = "udp";
  std::optional<int> count, spacing_ms, size, timeout_ms;
};

xmlrpc_c::value probe_spec(const ProbeAddOptions& o) {
  if (o.nodes.empty() == o.paths.empty())
    throw CommandError(ErrorCode::kInvalidInput, "give either --nodes or --path (not both)");
  Struct spec{{"tool", xmlrpc_c::value_string("latency")},
              {"interval", xmlrpc_c::value_double(o.interval)},
              {"mode", xmlrpc_c::value_string(o.oneshot ? "oneshot" : "continuous")}};
  if (!o.nodes.empty()) spec["nodes"] = string_array(o.nodes);
  if (!o.paths.empty()) {
    std::vector<xmlrpc_c::value> paths;
    for (const auto& path : o.paths) {
      auto sep = path.find(':');
      if (sep == std::string::npos || sep == 0 || sep + 1 == path.size())
        throw CommandError(ErrorCode::kInvalidInput,
                           fmt::format("--path '{}': expected SRC:DST", path));
      paths.push_back(string_array({path.substr(0, sep), path.substr(sep + 1)}));
    }
    spec["paths"] = xmlrpc_c::value_array(paths);
  }
  if (o.duration) spec["duration"] = xmlrpc_c::value_double(*o.duration);
  Struct args{{"method", xmlrpc_c::value_string(o.method)}};
  if (o.count) args["count"] = xmlrpc_c::value_int(*o.count);
  if (o.spacing_ms) args["spacing_ms"] = xmlrpc_c::value_int(*o.spacing_ms);
  if (o.size) args["size"] = xmlrpc_c::value_int(*o.size);
  if (o.timeout_ms) args["timeout_ms"] = xmlrpc_c::value_int(*o.timeout_ms);
  spec["args"] = xmlrpc_c::value_struct(args);
  return xmlrpc_c::value_struct(spec);
}

}  // namespace

int client_main(int argc, char** argv) {
  CLI::App app{
      "flexmon: ask for network measurements and read their results.\n"
      "The endpoint comes from --url or FLEXMON_URL, e.g. http://demo:TOKEN@127.0.0.1:8470/RPC2",
      "flexmon"};
  app.require_subcommand(1);
  std::string url;
  app.add_option("--url", url, "XML-RPC endpoint with credentials")->envname("FLEXMON_URL");
  unsigned timeout_s = 30;
  app.add_option("--timeout", timeout_s, "seconds to wait for the server")
      ->check(CLI::Range(1, 3600));
  RpcTls tls;
  app.add_option("--ca", tls.ca_file,
                 "PEM file of the CA that signed the manager's certificate (https:// URLs)")
      ->envname("FLEXMON_CA")
      ->check(CLI::ExistingFile);
  app.add_option("--cert", tls.cert_file,
                 "PEM client certificate, for a manager that requires one (manager.tls_client_ca)")
      ->check(CLI::ExistingFile);
  app.add_option("--key", tls.key_file, "PEM key of --cert")->check(CLI::ExistingFile);
  app.footer("Exit status: 0 success, 1 refused or failed, 64 bad usage, 69 server unreachable.");

  auto* probe = app.add_subcommand("probe", "request, list, show and cancel measurements");
  probe->require_subcommand(1);
  ProbeAddOptions add;
  auto* probe_add = probe->add_subcommand("add", "request latency measurements");
  probe_add->add_option("--nodes", add.nodes, "a mesh: every ordered pair of these nodes")
      ->delimiter(',');
  probe_add->add_option("--path", add.paths, "one path SRC:DST (repeatable)");
  probe_add->add_option("--interval", add.interval, "seconds between measurements")
      ->capture_default_str();
  probe_add->add_flag("--oneshot", add.oneshot, "measure each path once");
  probe_add->add_option("--duration", add.duration,
                        "seconds to keep measuring (default: until cancelled)");
  probe_add->add_option("--method", add.method, "latency method")
      ->capture_default_str()
      ->check(CLI::IsMember({"udp"}));
  probe_add->add_option("--count", add.count, "packets per measurement");
  probe_add->add_option("--spacing-ms", add.spacing_ms, "milliseconds between packets");
  probe_add->add_option("--size", add.size, "payload bytes per packet");
  probe_add->add_option("--timeout-ms", add.timeout_ms, "milliseconds to wait for each reply");
  auto* probe_list = probe->add_subcommand("list", "list your requests (all, for an admin)");
  std::string request_id;
  auto* probe_get = probe->add_subcommand("get", "show one request");
  probe_get->add_option("id", request_id, "request id, e.g. r1")->required();
  auto* probe_cancel = probe->add_subcommand("cancel", "cancel a request");
  probe_cancel->add_option("id", request_id, "request id, e.g. r1")->required();

  auto* nodes = app.add_subcommand("nodes", "list the nodes and their state");

  auto* results = app.add_subcommand("results", "latency results; by default the newest per path");
  std::optional<std::string> src, dst, since, until;
  int limit = 1000;
  bool all = false;
  results->add_option("--src", src, "source node");
  results->add_option("--dst", dst, "destination node");
  results->add_option("--since", since, "from: a duration ago (10m, 2h) or YYYY-MM-DDTHH:MM:SSZ");
  results->add_option("--until", until, "to: same forms as --since");
  results->add_option("--limit", limit, "at most this many rows")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  results->add_flag("--all", all, "every result, newest first, not only the newest per path");

  // Storage work moved to flexmon-admin (admin/), which runs where the databases are.
  std::vector<CLI::App*> moved;
  for (const char* name : {"flush", "dump"})
    moved.push_back(
        app.add_subcommand(name, fmt::format("moved: flexmon-admin {}", name))->allow_extras());

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      app.exit(e);
      return kExitOk;
    }
    std::cerr << "flexmon: " << e.what() << "\nRun 'flexmon --help' for usage.\n";
    return kExitUsage;
  }

  for (const CLI::App* command : moved)
    if (command->parsed()) {
      std::string line = "flexmon-admin " + command->get_name();
      for (const auto& arg : command->remaining()) line += " " + arg;
      std::cerr << fmt::format("flexmon: '{}' runs on the collector's host: use {}\n",
                               command->get_name(), line);
      return kExitUsage;
    }

  try {
    if (url.empty())
      throw CommandError(ErrorCode::kInvalidInput, "no endpoint: give --url or set FLEXMON_URL");
    auto endpoint = parse_rpc_url(url);
    if (!endpoint) throw CommandError(endpoint.error().code, endpoint.error().message);
    RpcClient client(*endpoint, timeout_s * 1000, tls);

    auto call = [&](const std::string& method, const xmlrpc_c::paramList& params) {
      auto outcome = client.call(method, params);
      if (auto* failure = std::get_if<RpcFailure>(&outcome)) {
        if (failure->code == 0)
          throw CommandError(ErrorCode::kUnavailable,
                             "cannot reach the server: " + failure->message);
        throw ServerRefusal(
            fmt::format("{} refused (fault {}): {}", method, failure->code, failure->message));
      }
      return std::get<xmlrpc_c::value>(outcome);
    };

    if (probe_add->parsed()) {
      xmlrpc_c::paramList params;
      params.add(probe_spec(add));
      Struct reply = xmlrpc_c::value_struct(call("probe.request", params)).cvalue();
      std::cout << get_string(reply, "id") << "\n";
    } else if (probe_list->parsed()) {
      print_requests(as_structs(call("probe.list", xmlrpc_c::paramList())));
    } else if (probe_get->parsed()) {
      xmlrpc_c::paramList params;
      params.add(xmlrpc_c::value_string(request_id));
      print_requests({xmlrpc_c::value_struct(call("probe.get", params)).cvalue()});
    } else if (probe_cancel->parsed()) {
      xmlrpc_c::paramList params;
      params.add(xmlrpc_c::value_string(request_id));
      Struct reply = xmlrpc_c::value_struct(call("probe.cancel", params)).cvalue();
      std::cout << get_string(reply, "id") << " " << get_string(reply, "state") << "\n";
    } else if (nodes->parsed()) {
      Table table({"ID", "SITE", "ADDRESS", "STATE", "LAST CONTACT (UTC)", "LOAD", "STREAMS"});
      for (const auto& n : as_structs(call("node.list", xmlrpc_c::paramList())))
        table.add({get_string(n, "id"), get_string(n, "site"), get_string(n, "address"),
                   get_string(n, "state"), format_epoch(get_number(n, "last_contact")),
                   fmt::format("{:.2f}", get_number(n, "load").value_or(0)),
                   get_string(n, "streams")});
      table.print(std::cout);
    } else if (results->parsed()) {
      double now = static_cast<double>(utc_now_ns()) / 1e9;
      Struct filter{{"limit", xmlrpc_c::value_int(limit)},
                    {"latest", xmlrpc_c::value_boolean(!all)}};
      if (src) filter["src"] = xmlrpc_c::value_string(*src);
      if (dst) filter["dst"] = xmlrpc_c::value_string(*dst);
      if (since) filter["from"] = xmlrpc_c::value_double(parse_time(*since, now));
      if (until) filter["to"] = xmlrpc_c::value_double(parse_time(*until, now));
      xmlrpc_c::paramList params;
      params.add(xmlrpc_c::value_struct(filter));
      // One page (query.latency answers {rows, next_cursor}): at most --limit rows.
      Struct page = xmlrpc_c::value_struct(call("query.latency", params)).cvalue();
      auto found = page.find("rows");
      if (found == page.end()) throw girerr::error("query.latency: no rows in the answer");
      auto rows = as_structs(found->second);
      if (!all)
        std::sort(rows.begin(), rows.end(), [](const Struct& a, const Struct& b) {
          return std::pair(get_string(a, "src"), get_string(a, "dst")) <
                 std::pair(get_string(b, "src"), get_string(b, "dst"));
        });
      print_results(rows);
    }
  } catch (const CommandError& e) {
    std::cerr << "flexmon: " << e.what() << "\n";
    return exit_status(e.code);
  } catch (const ServerRefusal& e) {
    std::cerr << "flexmon: " << e.what() << "\n";
    return kExitFailure;
  } catch (const girerr::error& e) {
    std::cerr << "flexmon: unexpected reply from the server: " << e.what() << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace flexmon
