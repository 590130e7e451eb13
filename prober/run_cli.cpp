#include "prober/run_cli.h"

#include <signal.h>

#include <charconv>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "common/clock.h"
#include "common/config.h"
#include "common/daemon.h"
#include "common/status.h"
#include "common/tool.h"
#include "prober/event_loop.h"
#include "prober/responder.h"
#include "prober/tools.h"
#include "wire.pb.h"

namespace flexmon::prober {

namespace {

std::optional<std::string> from_hex(const std::string& hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    unsigned byte = 0;
    auto [end, ec] = std::from_chars(hex.data() + i, hex.data() + i + 2, byte, 16);
    if (ec != std::errc() || end != hex.data() + i + 2) return std::nullopt;
    out.push_back(static_cast<char>(byte));
  }
  return out;
}

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

std::string ms(std::int64_t ns) { return fmt::format("{:.3f}", ns / 1e6); }

void print_text(const wire::Result& r, const std::string& target) {
  std::string status(status_name(r.status()));
  if (r.has_latency()) {
    const auto& l = r.latency();
    double loss = l.sent() ? 100.0 * (l.sent() - std::min(l.sent(), l.received())) / l.sent() : 0;
    std::printf("%s : xmt/rcv/%%loss = %u/%u/%.0f%%", target.c_str(), l.sent(), l.received(), loss);
    if (l.received())
      std::printf(", min/avg/max/median = %s/%s/%s/%s ms", ms(l.min_ns()).c_str(),
                  ms(l.avg_ns()).c_str(), ms(l.max_ns()).c_str(), ms(l.median_ns()).c_str());
    if (l.duplicates()) std::printf(", %u duplicates", l.duplicates());
    std::printf(" [%s]\n", status.c_str());
  } else if (r.has_abw()) {
    const auto& a = r.abw();
    std::printf("%s : abw %.2f Mbit/s [%.2f, %.2f], %llu bytes, %.2f s [%s]\n", target.c_str(),
                a.estimate_bps() / 1e6, a.lower_bps() / 1e6, a.upper_bps() / 1e6,
                static_cast<unsigned long long>(a.bytes_sent()), a.duration_ns() / 1e9,
                status.c_str());
  } else if (r.has_throughput()) {
    const auto& t = r.throughput();
    std::printf("%s : throughput %.2f Mbit/s, %llu bytes, %.2f s [%s]\n", target.c_str(),
                t.throughput_bps() / 1e6, static_cast<unsigned long long>(t.bytes_sent()),
                t.duration_ns() / 1e9, status.c_str());
  } else {
    std::printf("%s : [%s]\n", target.c_str(), status.c_str());
  }
  if (!r.error().empty()) std::printf("  %s\n", r.error().c_str());
  if (r.has_outage())
    std::printf("  outage from %s to %s (%u extra probes)\n",
                format_utc(r.outage().start_ns()).c_str(),
                r.outage().end_ns() ? format_utc(r.outage().end_ns()).c_str() : "(still out)",
                r.outage().probes_sent());
}

}  // namespace

int run_main(int argc, char** argv) {
  CLI::App app{"flexmon-prober run: one measurement by hand (no manager), or a responder",
               "flexmon-prober run"};
  app.require_subcommand(1);
  std::string target, method = "icmp", netns, source, node, key_hex, config_file;
  std::uint32_t port = 0, tcp_port = 0, count = 5, spacing_ms = 1000, timeout_ms = 1000;
  std::uint32_t size = 0;
  std::uint64_t max_rate = 100'000'000, max_bytes = 2'000'000;
  std::uint32_t max_duration_ms = 5000, duration_ms = 10'000;
  std::uint64_t tput_max_bytes = 0;
  bool json = false, no_outage = false;
  std::uint32_t outage_spacing_ms = 200, outage_max_probes = 50;
  std::string listen = "0.0.0.0";
  std::vector<std::string> peers;
  double run_for_s = 0;

  auto common = [&](CLI::App* sub, bool sealed) {
    sub->add_option("--target", target, "address or host name to measure")->required();
    sub->add_option("--port", port, "the responder's UDP/TCP port at the target");
    sub->add_option("--netns", netns, "network namespace: name under /run/netns or a path");
    sub->add_option("--source", source, "source address to bind");
    sub->add_flag("--json", json, "print the result as JSON (the stored fields)");
    if (sealed) {
      sub->add_option("--node", node, "this node's id (seals the probes)");
      sub->add_option("--key-hex", key_hex, "this node's key, hex");
      sub->add_option("--config", config_file, "take --node's key and the port from a config");
    }
  };
  auto* lat = app.add_subcommand("latency", "fping-style latency: icmp, udp or tcp");
  common(lat, false);
  lat->add_option("--method", method, "icmp, udp (peer responder) or tcp (handshake)")
      ->check(CLI::IsMember({"icmp", "udp", "tcp"}));
  lat->add_option("--count", count, "probes")->check(CLI::Range(1, 65535));
  lat->add_option("--spacing-ms", spacing_ms, "between probe sends");
  lat->add_option("--timeout-ms", timeout_ms, "per probe")->check(CLI::Range(1, 600'000));
  lat->add_option("--size", size, "payload bytes (icmp 56, udp 64 by default)")
      ->check(CLI::Range(0, 65000));
  lat->add_option("--tcp-port", tcp_port, "TCP port for method tcp (default: --port)");
  lat->add_flag("--no-outage", no_outage, "do not probe a dead path until it answers");
  lat->add_option("--outage-spacing-ms", outage_spacing_ms, "spacing of outage probes");
  lat->add_option("--outage-max-probes", outage_max_probes, "bound on outage probes");
  auto* abw = app.add_subcommand("abw", "available bandwidth (packet trains to a responder)");
  common(abw, true);
  abw->add_option("--max-rate-bps", max_rate, "highest probing rate");
  abw->add_option("--max-bytes", max_bytes, "probe bytes, both directions");
  abw->add_option("--max-duration-ms", max_duration_ms, "time cap");
  auto* tput = app.add_subcommand("throughput", "iperf-style TCP throughput to a responder");
  common(tput, true);
  tput->add_option("--duration-ms", duration_ms, "transfer time");
  tput->add_option("--max-bytes", tput_max_bytes, "stop after this many bytes (0: no cap)");
  auto* resp = app.add_subcommand("responder", "answer peers' probes (UDP and TCP)");
  resp->add_option("--listen", listen, "address to bind");
  resp->add_option("--port", port, "port (UDP and TCP)");
  resp->add_option("--peer", peers, "NODE:KEYHEX allowed to run abw / throughput (repeat)");
  resp->add_option("--config", config_file, "serve every node of this config");
  resp->add_option("--for-s", run_for_s, "stop after this many seconds (0: until a signal)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }

  std::optional<Config> config;
  if (!config_file.empty()) {
    try {
      config = load_config(config_file);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "flexmon-prober run: %s\n", e.what());
      return kExitConfig;
    }
  }

  if (resp->parsed()) {
    std::map<std::string, std::string> keys;
    if (config)
      for (const auto& n : config->nodes) keys[n.id] = n.key;
    for (const auto& p : peers) {
      auto colon = p.find(':');
      auto key = colon == std::string::npos ? std::nullopt : from_hex(p.substr(colon + 1));
      if (!key || key->size() < 16) {
        std::fprintf(stderr, "flexmon-prober run responder: --peer %s: want NODE:KEYHEX\n",
                     p.c_str());
        return kExitUsage;
      }
      keys[p.substr(0, colon)] = *key;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    try {
      EventLoop loop;
      Responder responder(loop, listen, static_cast<std::uint16_t>(port), 16, 65507);
      responder.set_peer_keys(std::move(keys));
      loop.start();
      std::printf("ready port=%u tcp_port=%u\n", responder.port(), responder.tcp_port());
      std::fflush(stdout);
      auto until = std::chrono::steady_clock::now() +
                   std::chrono::milliseconds(static_cast<std::int64_t>(run_for_s * 1000));
      while (!g_stop && (run_for_s <= 0 || std::chrono::steady_clock::now() < until))
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const auto& c = responder.counters();
      std::fprintf(stderr,
                   "responder: echoed %llu, malformed %llu, abw answered %llu rejected %llu, "
                   "tcp accepted %llu, throughput bytes %llu rejected %llu\n",
                   static_cast<unsigned long long>(c.echoed.load()),
                   static_cast<unsigned long long>(c.malformed.load()),
                   static_cast<unsigned long long>(c.abw_answered.load()),
                   static_cast<unsigned long long>(c.abw_rejected.load()),
                   static_cast<unsigned long long>(c.tcp_accepted.load()),
                   static_cast<unsigned long long>(c.throughput_bytes.load()),
                   static_cast<unsigned long long>(c.throughput_rejected.load()));
      loop.stop();
      loop.join();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "flexmon-prober run responder: %s\n", e.what());
      return kExitFailure;
    }
    return kExitOk;
  }

  ToolContext context;
  context.source_address = source;
  context.node = node;
  context.outage.enabled = !no_outage;
  context.outage.spacing_ms = outage_spacing_ms;
  context.outage.max_probes = outage_max_probes;
  if (config && !node.empty()) {
    const auto* n = config->find_node(node);
    if (!n) {
      std::fprintf(stderr, "flexmon-prober run: --node %s is not in %s\n", node.c_str(),
                   config_file.c_str());
      return kExitConfig;
    }
    context.key = n->key;
  }
  if (!key_hex.empty()) {
    auto key = from_hex(key_hex);
    if (!key || key->size() < 16) {
      std::fprintf(stderr, "flexmon-prober run: --key-hex: want at least 32 hex digits\n");
      return kExitUsage;
    }
    context.key = *key;
  }
  if (context.node.empty()) context.node = "local";

  wire::Stream s;
  s.set_key("run");
  s.set_src(context.node);
  s.set_dst(target);
  s.set_dst_address(target);
  if (port == 0 && config) port = config->prober.responder_port;
  if (port == 0) port = 8473;
  s.set_dst_port(port);
  s.set_dst_tcp_port(tcp_port);
  s.set_netns(netns);
  s.set_oneshot(true);
  Tool tool = lat->parsed() ? Tool::kLatency : abw->parsed() ? Tool::kAbw : Tool::kThroughput;
  s.set_tool(std::string(tool_name(tool)));
  if (tool == Tool::kLatency) {
    auto* a = s.mutable_latency();
    a->set_method(method);
    a->set_count(count);
    a->set_spacing_ms(spacing_ms);
    a->set_timeout_ms(timeout_ms);
    a->set_size(size ? size : (method == "icmp" ? 56 : 64));
  } else if (tool == Tool::kAbw) {
    s.mutable_abw()->set_max_rate_bps(max_rate);
    s.mutable_abw()->set_max_bytes(max_bytes);
    s.mutable_abw()->set_max_duration_ms(max_duration_ms);
  } else {
    s.mutable_throughput()->set_duration_ms(duration_ms);
    s.mutable_throughput()->set_max_bytes(tput_max_bytes);
  }
  if (tool != Tool::kLatency && context.key.empty()) {
    std::fprintf(stderr, "flexmon-prober run %s: needs --node with --key-hex or --config\n",
                 s.tool().c_str());
    return kExitUsage;
  }
  auto result = run_measurement(s, context);
  if (json)
    std::printf("%s\n", result_json(result).c_str());
  else
    print_text(result, target);
  return result.status() == wire::OK ? kExitOk : kExitFailure;
}

}  // namespace flexmon::prober
