// probe.request spec and query filter validation: every bound, unknown keys,
// unknown nodes, both nodes and paths, wrong types.
#include "manager/spec.h"

#include <gtest/gtest.h>

#include "tests/manager/test_config.h"

namespace flexmon::manager {
namespace {

using xmlrpc_c::value;
using S = xmlrpc_c::cstruct;
using A = xmlrpc_c::carray;

value str(const char* s) { return xmlrpc_c::value_string(s); }
value num(int x) { return xmlrpc_c::value_int(x); }
value dbl(double x) { return xmlrpc_c::value_double(x); }
value arr(std::initializer_list<value> items) { return xmlrpc_c::value_array(A(items)); }

class SpecTest : public ::testing::Test {
 protected:
  Config config = testing::test_config(testing::temp_dir());

  S base() {
    return {
        {"tool", str("latency")}, {"nodes", arr({str("n1"), str("n2")})}, {"interval", dbl(10)}};
  }
  // The fault a spec gets; fails the test if it is accepted.
  ApiFault fault(const S& spec) {
    try {
      parse_spec(xmlrpc_c::value_struct(spec), config);
    } catch (const ApiFault& f) {
      return f;
    }
    ADD_FAILURE() << "spec accepted";
    return ApiFault(kInternal, "");
  }
  void expect_bad(S spec, const std::string& message, FaultCode code = kBadArgument) {
    ApiFault f = fault(spec);
    EXPECT_EQ(f.code(), code) << f.what();
    EXPECT_EQ(std::string(f.what()), message);
  }
  S with(const std::string& key, value v) {
    S s = base();
    s.erase(key);
    s.emplace(key, v);
    return s;
  }
  S with_args(S args) { return with("args", xmlrpc_c::value_struct(args)); }
};

TEST_F(SpecTest, AcceptsMeshWithDefaults) {
  RequestSpec spec = parse_spec(xmlrpc_c::value_struct(base()), config);
  EXPECT_EQ(spec.mode, Mode::continuous);
  EXPECT_EQ(spec.interval_s, 10);
  EXPECT_EQ(spec.latency, LatencyArgs{});
  ASSERT_EQ(spec.paths.size(), 2u);
  EXPECT_EQ(spec.paths[0], (Path{"n1", "n2"}));
  EXPECT_EQ(spec.paths[1], (Path{"n2", "n1"}));
}

TEST_F(SpecTest, AcceptsPathsOneshotAndArgs) {
  S s{{"tool", str("latency")},
      {"paths", arr({arr({str("n3"), str("n1")})})},
      {"mode", str("oneshot")},
      {"args", xmlrpc_c::value_struct({{"count", num(100)},
                                       {"spacing_ms", num(10)},
                                       {"size", num(1472)},
                                       {"timeout_ms", num(10000)},
                                       {"method", str("udp")}})}};
  RequestSpec spec = parse_spec(xmlrpc_c::value_struct(s), config);
  EXPECT_EQ(spec.mode, Mode::oneshot);
  EXPECT_EQ(spec.latency.count, 100u);
  EXPECT_EQ(spec.paths, (std::vector<Path>{{"n3", "n1"}}));
}

TEST_F(SpecTest, RejectsEveryArgumentBound) {
  expect_bad(with_args({{"count", num(101)}}), "args.count: 101 is above the limit of 100");
  expect_bad(with_args({{"count", num(0)}}), "args.count: 0 is below the limit of 1");
  expect_bad(with_args({{"spacing_ms", num(9)}}), "args.spacing_ms: 9 is below the limit of 10");
  expect_bad(with_args({{"spacing_ms", num(10001)}}),
             "args.spacing_ms: 10001 is above the limit of 10000");
  expect_bad(with_args({{"size", num(15)}}), "args.size: 15 is below the limit of 16");
  expect_bad(with_args({{"size", num(1473)}}), "args.size: 1473 is above the limit of 1472");
  expect_bad(with_args({{"timeout_ms", num(9)}}), "args.timeout_ms: 9 is below the limit of 10");
  expect_bad(with_args({{"timeout_ms", num(10001)}}),
             "args.timeout_ms: 10001 is above the limit of 10000");
  expect_bad(with_args({{"method", str("raw")}}),
             "args.method: 'raw' is not supported (supported: udp, icmp, tcp)");
  expect_bad(with_args({{"port", num(80)}}), "args.port: only the tcp method takes a port");
  expect_bad(with("interval", dbl(0.5)), "interval: 0.5 s is below the limit of 1 s");
  expect_bad(with("interval", num(86401)), "interval: 86401 s is above the limit of 86400 s");
  expect_bad(with("duration", num(2592001)), "duration: 2592001 s is above the limit of 2592000 s");
  expect_bad(with("duration", num(0)), "duration: 0 s is not positive");
  config.limits.max_paths_per_request = 5;
  expect_bad(with("nodes", arr({str("n1"), str("n2"), str("n3")})),
             "nodes: 3 nodes make 6 paths, above the limit of 5 paths per request");
}

TEST_F(SpecTest, RejectsUnknownKeysAndNodes) {
  expect_bad(with("colour", str("red")),
             "spec.colour: unknown key (expected one of args, dry_run, duration, interval, mode, "
             "netns, nodes, paths, priority, tool)");
  expect_bad(with_args({{"ttl", num(3)}}),
             "args.ttl: unknown key (expected one of count, method, port, size, spacing_ms, "
             "timeout_ms)");
  expect_bad(with("nodes", arr({str("n1"), str("n2"), str("n9")})), "unknown node 'n9' in nodes[2]",
             kUnknownNode);
  S bad_path = base();
  bad_path.erase("nodes");
  bad_path.emplace("paths", arr({arr({str("n1"), str("x")})}));
  expect_bad(bad_path, "unknown node 'x' in paths[0][1]", kUnknownNode);
}

TEST_F(SpecTest, RejectsShapes) {
  expect_bad(with("paths", arr({})), "nodes, paths: give one of them, not both");
  S no_paths = base();
  no_paths.erase("nodes");
  expect_bad(no_paths, "nodes, paths: one of them is required");
  expect_bad(with("nodes", arr({str("n1")})), "nodes: at least 2 nodes are needed, got 1");
  expect_bad(with("nodes", arr({str("n1"), str("n1")})), "nodes[1]: node 'n1' is listed twice");
  expect_bad(with("nodes", str("n1,n2")), "nodes: expected an array, got string");
  expect_bad(with("nodes", arr({num(1), str("n2")})), "nodes[0]: expected a string, got int");
  expect_bad(with("interval", str("10")), "interval: expected a number of seconds, got string");
  expect_bad(with("args", num(1)), "args: expected a struct, got int");
  expect_bad(with_args({{"count", dbl(5)}}), "args.count: expected an int, got double");
  expect_bad(with("mode", str("twice")),
             "mode: 'twice' is not a mode (expected continuous or oneshot)");
  S oneshot = with("mode", str("oneshot"));
  oneshot.emplace("duration", num(60));
  expect_bad(oneshot, "duration: only continuous requests have a duration");
  S no_interval = base();
  no_interval.erase("interval");
  expect_bad(no_interval, "interval: missing (required for continuous requests)");
  S same{{"tool", str("latency")},
         {"interval", num(5)},
         {"paths", arr({arr({str("n1"), str("n1")})})}};
  expect_bad(same, "paths[0]: source and destination are both 'n1'");
  S triple{{"tool", str("latency")}, {"interval", num(5)}, {"paths", arr({arr({str("n1")})})}};
  expect_bad(triple, "paths[0]: expected [src, dst], got 1 elements");
  EXPECT_EQ(fault(with("tool", str("bandwidth"))).code(), kBadArgument);
  try {
    parse_spec(arr({}), config);
    ADD_FAILURE();
  } catch (const ApiFault& f) {
    EXPECT_EQ(std::string(f.what()), "spec: expected a struct, got array");
  }
}

// Regression: any caller could name any netns, and the prober opened what
// was named. The config says which namespaces each role may name: none for
// role user, any name under /run/netns for admins, unless limits.netns or
// limits.roles.ROLE.netns says otherwise.
TEST_F(SpecTest, NetnsIsLimitedByRole) {
  auto as = [&](Role role, const std::string& netns) {
    return parse_spec(xmlrpc_c::value_struct(with("netns", str(netns.c_str()))), config, role);
  };
  auto refusal = [&](Role role, const std::string& netns) -> std::string {
    try {
      as(role, netns);
    } catch (const ApiFault& f) {
      EXPECT_EQ(f.code(), kNotPermitted) << f.what();
      return f.what();
    }
    ADD_FAILURE() << netns << " accepted";
    return {};
  };
  EXPECT_EQ(refusal(Role::user, "blue"),
            "netns: 'blue' is not allowed for this role (limits.netns allows none)");
  EXPECT_EQ(as(Role::admin, "blue").netns, "blue");
  EXPECT_EQ(as(Role::admin, "/run/netns/blue").netns, "/run/netns/blue");
  EXPECT_EQ(refusal(Role::admin, "/proc/1/ns/net"),
            "netns: '/proc/1/ns/net' is not allowed for this role (limits.roles.admin.netns, by "
            "default, allows '*')");
  EXPECT_EQ(refusal(Role::admin, "/run/netns/sub/blue"),
            "netns: '/run/netns/sub/blue' is not allowed for this role (limits.roles.admin.netns, "
            "by default, allows '*')");
  expect_bad(with("netns", str("run/netns/blue")),
             "netns: 'run/netns/blue' is neither a name under /run/netns nor an absolute path");
  expect_bad(with("netns", str("/run/netns/../../tmp/fifo")),
             "netns: '/run/netns/../../tmp/fifo' is neither a name under /run/netns nor an "
             "absolute path");

  config = parse_config(R"(
limits:
  netns: [lab-*, "/proc/*/ns/net"]
  roles:
    user: {netns: [lab-a]}
nodes:
  - {id: n1, site: a, address: 127.0.0.1, key: 000102030405060708090a0b0c0d0e0f}
  - {id: n2, site: a, address: 127.0.0.2, key: 101112131415161718191a1b1c1d1e1f}
)",
                        "roles.yaml", testing::temp_dir());
  EXPECT_EQ(as(Role::user, "lab-a").netns, "lab-a");
  EXPECT_EQ(refusal(Role::user, "lab-b"),
            "netns: 'lab-b' is not allowed for this role (limits.roles.user.netns allows 'lab-a')");
  EXPECT_EQ(as(Role::admin, "lab-b").netns, "lab-b");
  EXPECT_EQ(as(Role::admin, "/proc/42/ns/net").netns, "/proc/42/ns/net");
  EXPECT_EQ(as(Role::admin, "other").netns, "other");

  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {"limits: {netns: [run/netns/x]}",
            "bad.yaml:1: limits.netns: 'run/netns/x' is neither a name under /run/netns nor an "
            "absolute path"},
           {"limits: {roles: {user: {netns: [\"/proc/../x\"]}}}",
            "bad.yaml:1: limits.roles.user.netns: '/proc/../x' contains '..'"},
           {"limits: {netns: blue}", "bad.yaml:1: limits.netns: expected a list of strings"}}) {
    try {
      parse_config(text, "bad.yaml", testing::temp_dir());
      ADD_FAILURE() << text << " accepted";
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
  }

  config.limits.admin.netns = std::vector<std::string>{};
  config.limits.admin.netns_key = "limits.roles.admin.netns";
  EXPECT_EQ(refusal(Role::admin, "lab-a"),
            "netns: 'lab-a' is not allowed for this role (limits.roles.admin.netns allows none)");
}

TEST(RequestId, Parses) {
  EXPECT_EQ(parse_request_id("r1"), 1u);
  EXPECT_EQ(parse_request_id("r123"), 123u);
  for (const char* bad : {"", "r", "r0", "r01", "1", "r-1", "r1x", "R1", "r99999999999999999999"})
    EXPECT_FALSE(parse_request_id(bad)) << bad;
}

}  // namespace
}  // namespace flexmon::manager
