// What one unauthenticated refused XML-RPC request costs the real manager
// (the flexmon-manager binary, a process of its own), for each attack class
// of issue 14, against valid calls in the same run: the CPU time per request
// (utime + stime of the whole process in /proc/PID/stat, over --requests
// requests) and the peak memory above the manager's resident set before them
// (VmHWM in /proc/PID/status, reset by writing 5 to /proc/PID/clear_refs).
// Each request is one connection, as an attacker sends them. Figures one per
// line: cpu_us_per_request.CLASS, peak_kib.CLASS, body_bytes.CLASS; and
// rss_growth_kib, what the manager kept after every class was sent. And, in
// this process, the check of a body (manager/call_guard.h) against
// xmlrpc-c's own parse of the same body, for a query.latency call and a
// 60 KB probe.request: check_us.CALL, xmlrpc_c_parse_us.CALL.
// bench/run-refusals runs it several times and prints medians.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <xmlrpc-c/base.hpp>
#include <xmlrpc-c/xml.hpp>

#include "bench/manager_bench_util.h"
#include "manager/call_guard.h"
#include "manager/call_handler.h"
#include "tests/manager/http_post.h"

namespace {

using flexmon::manager::testing::dial_loopback;
using flexmon::manager::testing::post_xmlrpc;

std::string call_of(const std::string& method, const std::string& params) {
  return "<?xml version=\"1.0\"?><methodCall><methodName>" + method + "</methodName><params>" +
         params + "</params></methodCall>";
}

std::string entity_bomb() {
  std::string body = "<?xml version=\"1.0\"?>\n<!DOCTYPE methodCall [\n<!ENTITY a0 \"lol\">\n";
  for (int i = 1; i <= 9; ++i) {
    body += fmt::format("<!ENTITY a{} \"", i);
    for (int k = 0; k < 10; ++k) body += fmt::format("&a{};", i - 1);
    body += "\">\n";
  }
  return body + "]>\n<methodCall><methodName>&a9;</methodName></methodCall>\n";
}

struct Attack {
  std::string name;
  std::vector<std::string> bodies;  // sent in turn
  std::string authorization;
  bool valid = false;  // answered without a fault (the peers)
};

// alice:alice-token-0123456789abcdef, whose hash the config holds.
const std::string kAlice = "Basic YWxpY2U6YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg==";
const std::string kWrong = "Basic YWxpY2U6d3Jvbmc=";  // alice:wrong

std::vector<Attack> attacks(std::size_t max_request_bytes) {
  auto one = [](const std::string& value) {
    return call_of("probe.get", "<param><value>" + value + "</value></param>");
  };
  return {
      {"valid_list_methods", {call_of("system.listMethods", "")}, "", true},
      {"valid_probe_list", {call_of("probe.list", "")}, kAlice, true},
      {"bad_i8", {one("<i8>1x</i8>"), one("<i8>9223372036854775808</i8>")}, ""},
      {"bad_siblings",
       {one("<int>1x</int>"), one("<double>nan</double>"),
        one("<dateTime.iso8601>20260231T00:00:00</dateTime.iso8601>"), one("<base64>!!!!</base64>"),
        one("<boolean>true</boolean>"), one("<nil>x</nil>")},
       ""},
      {"entity_bomb", {entity_bomb()}, ""},
      {"oversized", {one("<string>" + std::string(max_request_bytes, 'x') + "</string>")}, ""},
      {"malformed_xml", {"<methodCall><<<", call_of("probe.list", "<param><value>&lol;")}, ""},
      {"bad_credentials", {call_of("probe.list", "")}, kWrong},
  };
}

long ticks_per_second() { return sysconf(_SC_CLK_TCK); }

// utime + stime of the process, every thread, in seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  // Fields after the command's closing parenthesis: state is field 3.
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  unsigned long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoul(field);
    if (i == 15) stime = std::stoul(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(ticks_per_second());
}

// A "VmRSS" or "VmHWM" line of /proc/PID/status, in KiB.
long status_kib(pid_t pid, const std::string& key) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(status, line);)
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  throw std::runtime_error("no " + key + " in /proc/PID/status");
}

void reset_peak(pid_t pid) { std::ofstream(fmt::format("/proc/{}/clear_refs", pid)) << "5"; }

// Two ports of 127.0.0.1 that nothing listens on now (the kernel's picks).
std::pair<std::uint16_t, std::uint16_t> free_ports() {
  std::uint16_t ports[2];
  int fds[2];
  for (int i = 0; i < 2; ++i) {
    fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof at;
    if (fds[i] < 0 || bind(fds[i], reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 ||
        getsockname(fds[i], reinterpret_cast<sockaddr*>(&at), &length) != 0)
      throw std::runtime_error("no free loopback port");
    ports[i] = ntohs(at.sin_port);
  }
  for (int fd : fds) close(fd);
  return {ports[0], ports[1]};
}

// Prints what CallGuard's check and xmlrpc-c's parseCall each cost per call
// of a body that both accept.
void compare_check_and_parse() {
  const std::string query = call_of(
      "query.latency",
      "<param><value><struct><member><name>src</name><value><string>n1</string></value></member>"
      "<member><name>dst</name><value><string>n2</string></value></member><member><name>limit"
      "</name><value><int>100</int></value></member><member><name>from</name><value>"
      "<dateTime.iso8601>20260203T12:00:00</dateTime.iso8601></value></member></struct></value>"
      "</param>");
  std::string paths;
  while (paths.size() < 60000)
    paths +=
        "<value><array><data><value><string>n1</string></value><value><string>n2</string>"
        "</value></data></array></value>";
  const std::string request =
      call_of("probe.request",
              "<param><value><struct><member><name>paths</name><value><array><data>" + paths +
                  "</data></array></value></member><member><name>interval</name><value>"
                  "<double>10.5</double></value></member></struct></value></param>");
  // xmlrpc-c's limits and the check's as the manager sets them by default.
  const flexmon::ManagerConfig defaults;
  flexmon::manager::configure_xmlrpc_limits(defaults);
  const flexmon::manager::CallGuard guard(defaults.max_nesting);
  using Clock = std::chrono::steady_clock;
  for (const auto& [name, body, count] :
       {std::tuple{"query_latency_call", &query, 20000}, {"probe_request_60kb", &request, 200}}) {
    const auto start = Clock::now();
    for (int i = 0; i < count; ++i)
      if (guard.check(*body).index() != 0) throw std::logic_error("the check refused a call");
    const auto checked = Clock::now();
    for (int i = 0; i < count; ++i) {
      std::string method;
      xmlrpc_c::paramList params;
      xmlrpc_c::xml::parseCall(*body, &method, &params);
    }
    const auto parsed = Clock::now();
    auto us = [count](auto from, auto to) {
      return std::chrono::duration<double, std::micro>(to - from).count() / count;
    };
    std::printf("check_us.%s %.1f\n", name, us(start, checked));
    std::printf("xmlrpc_c_parse_us.%s %.1f\n", name, us(checked, parsed));
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CPU and peak memory of one refused XML-RPC request to flexmon-manager"};
  std::string manager_path =
      (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "flexmon-manager").string();
  int requests = 2000;
  std::size_t rotation = 0;
  app.add_option("--manager", manager_path, "the flexmon-manager binary");
  app.add_option("--requests", requests, "requests of each class")->check(CLI::Range(1, 1000000));
  app.add_option("--rotation", rotation,
                 "classes are measured in their order rotated by this many (alternates runs)");
  CLI11_PARSE(app, argc, argv);
  compare_check_and_parse();

  const auto dir = flexmon::bench::temp_dir("flexmon-refusal-bench");
  const auto [port, control_port] = free_ports();
  const std::size_t max_request_bytes = 1 << 20;
  {
    std::ofstream config(dir / "manager.yaml");
    config << fmt::format(
        "manager:\n  xmlrpc_listen: 127.0.0.1:{}\n  control_listen: 127.0.0.1:{}\n"
        "  state_db: manager.db\n  max_request_bytes: {}\n"
        "collector:\n  cache_db: cache.db\n"
        "nodes:\n  - {{id: n1, site: a, address: 127.0.0.1, key: "
        "000102030405060708090a0b0c0d0e0f}}\n"
        "users:\n  - {{name: alice, role: admin, token_hash: \"hmac-sha256:28:"
        "000102030405060708090a0b0c0d0e0f:"
        "95fd288ef5ebf6ed5816c420792ba921279f0d06ae564b38bdca924e2a39178b\"}}\n",
        port, control_port, max_request_bytes);
  }
  const pid_t pid = fork();
  if (pid == 0) {
    if (!freopen("/dev/null", "w", stderr)) _exit(127);
    execl(manager_path.c_str(), manager_path.c_str(), "--config", (dir / "manager.yaml").c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int tries = 0;; ++tries) {
    int fd = dial_loopback(port);
    if (fd >= 0) {
      close(fd);
      break;
    }
    int status = 0;
    if (tries > 500 || waitpid(pid, &status, WNOHANG) == pid) {
      std::fprintf(stderr, "manager_refusal_bench: %s did not start on port %u\n",
                   manager_path.c_str(), port);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

  const auto classes = attacks(max_request_bytes);
  // One of each first: every class's first allocations are not its cost.
  for (const auto& a : classes)
    for (const auto& body : a.bodies) {
      const std::string response = post_xmlrpc(dial_loopback(port), a.authorization, body);
      if (a.valid != (response.find("200 OK") != std::string::npos &&
                      response.find("<fault>") == std::string::npos)) {
        std::fprintf(stderr, "manager_refusal_bench: %s: unexpected answer: %.300s\n",
                     a.name.c_str(), response.c_str());
        kill(pid, SIGKILL);
        return 1;
      }
    }
  const long rss_start = status_kib(pid, "VmRSS");
  for (std::size_t k = 0; k < classes.size(); ++k) {
    const Attack& a = classes[(k + rotation) % classes.size()];
    const long rss_before = status_kib(pid, "VmRSS");
    reset_peak(pid);
    const double cpu_before = cpu_seconds(pid);
    std::size_t bytes = 0;
    int unanswered = 0;  // the connection ended without a byte of answer
    for (int i = 0; i < requests; ++i) {
      const std::string& body = a.bodies[static_cast<std::size_t>(i) % a.bodies.size()];
      bytes += body.size();
      if (post_xmlrpc(dial_loopback(port), a.authorization, body).empty()) ++unanswered;
    }
    const double cpu = cpu_seconds(pid) - cpu_before;
    std::printf("cpu_us_per_request.%s %.1f\n", a.name.c_str(), cpu / requests * 1e6);
    std::printf("peak_kib.%s %ld\n", a.name.c_str(), status_kib(pid, "VmHWM") - rss_before);
    std::printf("body_bytes.%s %zu\n", a.name.c_str(), bytes / static_cast<std::size_t>(requests));
    std::printf("unanswered.%s %d\n", a.name.c_str(), unanswered);
  }
  std::printf("rss_growth_kib %ld\n", status_kib(pid, "VmRSS") - rss_start);
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  std::filesystem::remove_all(dir);
  return 0;
}
