#include "common/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <type_traits>
#include <unordered_set>

#include <fmt/format.h>

namespace flexmon {
namespace {

// Bounds of the numeric keys (schemas/config.md lists them). Wide enough for
// any real deployment; what lies outside is a typo that would overflow a
// conversion (seconds to nanoseconds in int64), spin a timer or refuse every
// request.
constexpr double kYearS = 365.0 * 86'400.0;
constexpr double kWeekS = 7.0 * 86'400.0;
constexpr std::uint32_t kMaxConnections = 1'000'000;
constexpr std::uint32_t kMaxHttpTimeoutS = 3600;
constexpr std::uint32_t kMaxKeepaliveRequests = 1'000'000;
constexpr std::uint32_t kMinRequestBytes = 1024;
constexpr std::uint32_t kMaxRequestBytes = 64u << 20;
// A system.multicall of a probe.request with explicit paths nests 6 deep
// (calls, call, params, spec, paths, pair): below 8 the API's own calls fail.
constexpr std::uint32_t kMinNesting = 8;
constexpr std::uint32_t kMaxNesting = 64;
constexpr double kMinDeadAfterS = 1.0;
constexpr double kMaxDeadAfterS = kWeekS;
// A manager that asks for more memory than this for rendered rows has a typo.
constexpr std::uint32_t kMaxRenderedRowsMb = 65536;
constexpr std::uint32_t kMaxWalMb = 65536;
constexpr double kMinHeartbeatS = 0.1;
constexpr double kMaxHeartbeatS = 3600.0;
constexpr std::uint64_t kMaxSpoolResults = 10'000'000'000;
constexpr double kMinFlushIntervalS = 0.1;
constexpr std::uint32_t kMaxFlushBatchRows = 100'000'000;
constexpr double kMinIntervalS = 0.01;
constexpr double kMaxIntervalS = kYearS;
constexpr double kMaxDurationS = 10 * kYearS;
constexpr std::uint32_t kMaxPaths = 100'000'000;
constexpr std::uint32_t kMaxRequestsPerUser = 10'000'000;
constexpr std::uint32_t kMaxLatencyCount = 100'000;
constexpr std::uint32_t kMaxLatencyMs = 600'000;
constexpr std::uint32_t kMinLatencySize = 16;             // the probe packet's header
constexpr std::uint32_t kMaxLatencySize = 65'507;         // largest UDP payload over IPv4
constexpr std::uint64_t kMaxRateBps = 1'000'000'000'000;  // 1 Tbit/s
constexpr std::uint64_t kMaxToolBytes = 1'000'000'000'000;
constexpr std::uint32_t kMaxToolMs = 3'600'000;
constexpr double kMaxBudgetBps = 1e15;

// A YAML mapping being read: every key must be consumed, so whatever is left
// at the end is an unknown key and an error. Messages: "FILE:LINE: KEY: why".
class Section {
 public:
  Section(YAML::Node node, std::string path, const std::string& file)
      : node_(std::move(node)), path_(std::move(path)), file_(file) {}

  [[noreturn]] void error_at(const YAML::Node& at, const std::string& key,
                             const std::string& why) const {
    throw ConfigError(fmt::format("{}:{}: {}: {}", file_, at.Mark().line + 1, key, why));
  }

  std::string key_path(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }

  bool has(const std::string& key) const { return node_[key].IsDefined(); }

  // An error about `key` of this section, at the line of its value.
  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    YAML::Node value = node_[key];
    error_at(value.IsDefined() ? value : node_, key_path(key), why);
  }

  YAML::Node take(const std::string& key) {
    seen_.insert(key);
    return node_[key];
  }

  template <typename T>
  void optional(const std::string& key, T& into) {
    YAML::Node value = take(key);
    if (!value.IsDefined() || value.IsNull()) return;
    into = convert<T>(value, key_path(key));
  }

  template <typename T>
  T required(const std::string& key) {
    YAML::Node value = take(key);
    if (!value.IsDefined() || value.IsNull())
      error_at(node_, key_path(key), "required key is missing");
    return convert<T>(value, key_path(key));
  }

  // An optional number that must lie in [min, max] (schemas/config.md gives
  // every key's bounds): a value out of them would overflow a conversion or
  // make a daemon spin, and is refused here with the key named.
  template <typename T>
  void bounded(const std::string& key, T& into, T min, T max) {
    YAML::Node value = node_[key];
    optional(key, into);
    // Only a given value: a default may be a sentinel (0: "the general one").
    if (value.IsDefined() && !value.IsNull() && !(into >= min && into <= max))
      fail(key, fmt::format("must be between {} and {}, got {}", min, max, into));
  }

  Section section(const std::string& key) {
    YAML::Node value = take(key);
    if (value.IsDefined() && !value.IsNull() && !value.IsMap())
      error_at(value, key_path(key), "expected a mapping");
    return Section(value.IsMap() ? value : YAML::Node(YAML::NodeType::Map), key_path(key), file_);
  }

  // Calls `read` for each item of a sequence of mappings.
  void each(const std::string& key, const std::function<void(Section&)>& read) {
    YAML::Node value = take(key);
    if (!value.IsDefined() || value.IsNull()) return;
    if (!value.IsSequence()) error_at(value, key_path(key), "expected a list");
    for (std::size_t i = 0; i < value.size(); ++i) {
      std::string item_path = fmt::format("{}[{}]", key_path(key), i);
      if (!value[i].IsMap()) error_at(value[i], item_path, "expected a mapping");
      Section item(value[i], item_path, file_);
      read(item);
      item.finish();
    }
  }

  // Rejects keys that nobody read, and keys given twice (yaml-cpp would
  // silently keep one of them).
  void finish() const {
    if (!node_.IsMap()) return;
    std::set<std::string> keys;
    for (const auto& entry : node_) {
      if (!entry.first.IsScalar()) error_at(entry.first, path_, "keys must be plain strings");
      std::string key = entry.first.Scalar();
      if (!keys.insert(key).second) error_at(entry.first, key_path(key), "duplicate key");
      if (!seen_.count(key)) error_at(entry.first, key_path(key), "unknown key");
    }
  }

  template <typename T>
  T convert(const YAML::Node& value, const std::string& key) const;

  const std::string& file() const { return file_; }

 private:
  YAML::Node node_;
  std::string path_;
  const std::string& file_;
  std::set<std::string> seen_;
};

template <>
std::string Section::convert<std::string>(const YAML::Node& value, const std::string& key) const {
  if (!value.IsScalar()) error_at(value, key, "expected a string");
  return value.Scalar();
}

template <typename Int>
Int convert_integer(const Section& section, const YAML::Node& value, const std::string& key) {
  if (!value.IsScalar()) section.error_at(value, key, "expected an integer");
  const std::string& text = value.Scalar();
  Int result{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), result);
  if (ec == std::errc::result_out_of_range)
    section.error_at(value, key,
                     fmt::format("{} is out of range ({}..{})", text,
                                 std::numeric_limits<Int>::min(), std::numeric_limits<Int>::max()));
  if (ec != std::errc() || end != text.data() + text.size())
    section.error_at(value, key, fmt::format("expected an integer, got '{}'", text));
  return result;
}

template <>
std::uint16_t Section::convert<std::uint16_t>(const YAML::Node& value,
                                              const std::string& key) const {
  return convert_integer<std::uint16_t>(*this, value, key);
}

template <>
std::uint32_t Section::convert<std::uint32_t>(const YAML::Node& value,
                                              const std::string& key) const {
  return convert_integer<std::uint32_t>(*this, value, key);
}

template <>
std::uint64_t Section::convert<std::uint64_t>(const YAML::Node& value,
                                              const std::string& key) const {
  return convert_integer<std::uint64_t>(*this, value, key);
}

template <>
bool Section::convert<bool>(const YAML::Node& value, const std::string& key) const {
  if (value.IsScalar() && (value.Scalar() == "true" || value.Scalar() == "false"))
    return value.Scalar() == "true";
  error_at(value, key, "expected true or false");
}

template <>
double Section::convert<double>(const YAML::Node& value, const std::string& key) const {
  if (!value.IsScalar()) error_at(value, key, "expected a number");
  const std::string& text = value.Scalar();
  double result = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), result);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(result))
    error_at(value, key, fmt::format("expected a number, got '{}'", text));
  return result;
}

template <>
std::vector<std::string> Section::convert<std::vector<std::string>>(const YAML::Node& value,
                                                                    const std::string& key) const {
  if (!value.IsSequence()) error_at(value, key, "expected a list of strings");
  std::vector<std::string> items;
  for (std::size_t i = 0; i < value.size(); ++i)
    items.push_back(convert<std::string>(value[i], fmt::format("{}[{}]", key, i)));
  return items;
}

template <>
std::filesystem::path Section::convert<std::filesystem::path>(const YAML::Node& value,
                                                              const std::string& key) const {
  std::string text = convert<std::string>(value, key);
  if (text.empty()) error_at(value, key, "expected a path, got an empty string");
  return text;
}

template <>
Endpoint Section::convert<Endpoint>(const YAML::Node& value, const std::string& key) const {
  std::string text = convert<std::string>(value, key);
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    error_at(value, key, fmt::format("expected HOST:PORT, got '{}'", text));
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  std::string port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535)
    error_at(value, key, fmt::format("port must be 1..65535, got '{}'", port_text));
  return Endpoint{host, static_cast<std::uint16_t>(port)};
}

template <>
Role Section::convert<Role>(const YAML::Node& value, const std::string& key) const {
  std::string text = convert<std::string>(value, key);
  for (Role role : {Role::reader, Role::user, Role::service, Role::admin})
    if (text == role_name(role)) return role;
  error_at(value, key,
           fmt::format("expected 'reader', 'user', 'service' or 'admin', got '{}'", text));
}

// Hex digits to bytes; nullopt unless every pair is hex.
std::optional<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string bytes;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    unsigned byte = 0;
    auto [end, ec] = std::from_chars(hex.data() + i, hex.data() + i + 2, byte, 16);
    if (ec != std::errc() || end != hex.data() + i + 2) return std::nullopt;
    bytes.push_back(static_cast<char>(byte));
  }
  return bytes;
}

std::string to_hex(std::string_view bytes) {
  std::string hex;
  for (unsigned char c : bytes) hex += fmt::format("{:02x}", c);
  return hex;
}

constexpr std::string_view kTokenHashScheme = "hmac-sha256";
constexpr std::size_t kMinSaltBytes = 16, kMaxSaltBytes = 64, kDigestBytes = 32;

std::string decode_key(const Section& section, const YAML::Node& at, const std::string& key,
                       const std::string& hex) {
  if (hex.size() % 2 != 0 || hex.size() < 32 || hex.size() > 128)
    section.error_at(at, key, "expected 32 to 128 hex digits (16 to 64 bytes)");
  std::string bytes;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    unsigned byte = 0;
    auto [end, ec] = std::from_chars(hex.data() + i, hex.data() + i + 2, byte, 16);
    if (ec != std::errc() || end != hex.data() + i + 2)
      section.error_at(at, key, fmt::format("not a hex digit pair: '{}'", hex.substr(i, 2)));
    bytes.push_back(static_cast<char>(byte));
  }
  return bytes;
}

// A node's `key` (key 1), or its `keys` during a rotation: 1 to 4 keys of
// distinct ids and bytes, at least one of them active; the node seals with
// the active key of the highest id.
void read_node_keys(Section& s, NodeConfig& node) {
  constexpr std::size_t kMaxNodeKeys = 4;
  if (s.has("key") && s.has("keys")) s.fail("keys", "give key or keys, not both");
  if (!s.has("key") && !s.has("keys")) s.fail("key", "required key is missing (or keys)");
  if (s.has("key")) {
    std::string hex = s.required<std::string>("key");
    node.keys.push_back(NodeKey{1, decode_key(s, s.take("key"), s.key_path("key"), hex), false});
  } else {
    s.each("keys", [&](Section& k) {
      NodeKey key;
      key.id = k.required<std::uint32_t>("id");
      std::string hex = k.required<std::string>("key");
      key.key = decode_key(k, k.take("key"), k.key_path("key"), hex);
      k.optional("retired", key.retired);
      if (key.id == 0) k.fail("id", "must be 1 to 4294967295");
      for (const auto& other : node.keys) {
        if (other.id == key.id) k.fail("id", fmt::format("key {} is given twice", key.id));
        if (other.key == key.key)
          k.fail("key", fmt::format("same bytes as key {}: a new key must be new", other.id));
      }
      node.keys.push_back(std::move(key));
    });
    if (node.keys.empty()) s.fail("keys", "needs at least one key");
    if (node.keys.size() > kMaxNodeKeys)
      s.fail("keys", fmt::format("at most {} keys (a rotation needs 2)", kMaxNodeKeys));
  }
  std::sort(node.keys.begin(), node.keys.end(),
            [](const NodeKey& a, const NodeKey& b) { return a.id > b.id; });
  auto active =
      std::find_if(node.keys.begin(), node.keys.end(), [](const NodeKey& k) { return !k.retired; });
  if (active == node.keys.end()) s.fail("keys", "every key is retired: one must be active");
  node.key = active->key;
  node.key_id = active->id;
}

// manager.control_*: the bounds of the control channel's edge.
void read_control_limits(Section& s, ManagerConfig& m) {
  s.bounded("control_max_connections", m.control_max_connections, 1u, 1'000'000u);
  s.bounded("control_max_unregistered_per_address", m.control_max_unregistered_per_address, 1u,
            65'535u);
  s.bounded("control_register_timeout_s", m.control_register_timeout_s, 1u, 300u);
  s.bounded("control_frame_timeout_s", m.control_frame_timeout_s, 1u, 3600u);
}

// An allow-list of network namespaces (Limits::netns): each entry a name
// pattern (no '/') or an absolute path pattern, without '..'.
void check_netns_patterns(const Section& s, const std::string& key,
                          const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    if (p.empty() || p.size() > 255 || p.find('\0') != std::string::npos)
      s.fail(key, "each entry must be 1 to 255 characters");
    if (p.find('/') != std::string::npos && p.front() != '/')
      s.fail(key, fmt::format("'{}' is neither a name under /run/netns nor an absolute path", p));
    if (p.find("..") != std::string::npos) s.fail(key, fmt::format("'{}' contains '..'", p));
  }
}

void read_limits(Section s, Limits& limits) {
  s.bounded("min_interval_s", limits.min_interval_s, kMinIntervalS, kMaxIntervalS);
  s.bounded("max_interval_s", limits.max_interval_s, kMinIntervalS, kMaxIntervalS);
  s.bounded("max_duration_s", limits.max_duration_s, 0.0, kMaxDurationS);
  s.bounded("max_paths_per_request", limits.max_paths_per_request, 1u, kMaxPaths);
  Section latency = s.section("latency");
  // Lower bounds above upper bounds would refuse every request: say so now.
  auto& l = limits.latency;
  latency.bounded("max_count", l.max_count, 1u, kMaxLatencyCount);
  latency.bounded("min_spacing_ms", l.min_spacing_ms, 1u, kMaxLatencyMs);
  latency.bounded("max_spacing_ms", l.max_spacing_ms, 1u, kMaxLatencyMs);
  latency.bounded("min_size", l.min_size, kMinLatencySize, kMaxLatencySize);
  latency.bounded("max_size", l.max_size, kMinLatencySize, kMaxLatencySize);
  latency.bounded("min_timeout_ms", l.min_timeout_ms, 1u, kMaxLatencyMs);
  latency.bounded("max_timeout_ms", l.max_timeout_ms, 1u, kMaxLatencyMs);
  if (l.min_spacing_ms > l.max_spacing_ms) latency.fail("min_spacing_ms", "above max_spacing_ms");
  if (l.min_size > l.max_size) latency.fail("min_size", "above max_size");
  if (l.min_timeout_ms > l.max_timeout_ms) latency.fail("min_timeout_ms", "above max_timeout_ms");
  if (limits.min_interval_s > limits.max_interval_s)
    s.fail("min_interval_s", "above max_interval_s");
  latency.finish();
  s.bounded("max_requests_per_user", limits.max_requests_per_user, 1u, kMaxRequestsPerUser);
  s.bounded("max_paths_per_user", limits.max_paths_per_user, 1u, kMaxPaths);
  s.optional("netns", limits.netns);
  check_netns_patterns(s, "netns", limits.netns);
  {
    Section abw = s.section("abw");
    auto& a = limits.abw;
    abw.bounded("max_rate_bps", a.max_rate_bps, std::uint64_t{1}, kMaxRateBps);
    abw.bounded("max_bytes", a.max_bytes, std::uint64_t{1}, kMaxToolBytes);
    abw.bounded("max_duration_ms", a.max_duration_ms, 1u, kMaxToolMs);
    abw.bounded("min_interval_s", a.min_interval_s, kMinIntervalS, kMaxIntervalS);
    abw.finish();
  }
  {
    Section tp = s.section("throughput");
    auto& t = limits.throughput;
    tp.bounded("max_duration_ms", t.max_duration_ms, 1u, kMaxToolMs);
    tp.bounded("max_bytes", t.max_bytes, std::uint64_t{1}, kMaxToolBytes);
    tp.bounded("min_interval_s", t.min_interval_s, kMinIntervalS, kMaxIntervalS);
    tp.finish();
  }
  {
    Section roles = s.section("roles");
    // No limits.roles.reader: a reader makes no requests.
    for (auto [name, into] :
         {std::pair{"user", &limits.user}, std::pair{"service", &limits.service},
          std::pair{"admin", &limits.admin}}) {
      Section r = roles.section(name);
      // The same bounds as the general key that each overrides.
      auto read = [&r](const char* key, auto& field, auto min, auto max) {
        if (!r.has(key)) return;
        typename std::remove_reference_t<decltype(field)>::value_type v{};
        r.bounded(key, v, min, max);
        field = v;
      };
      read("min_interval_s", into->min_interval_s, kMinIntervalS, kMaxIntervalS);
      read("max_duration_s", into->max_duration_s, 0.0, kMaxDurationS);
      read("max_paths_per_request", into->max_paths_per_request, 1u, kMaxPaths);
      read("max_requests_per_user", into->max_requests_per_user, 1u, kMaxRequestsPerUser);
      read("max_paths_per_user", into->max_paths_per_user, 1u, kMaxPaths);
      if (r.has("netns")) {
        std::vector<std::string> netns;
        r.optional("netns", netns);
        check_netns_patterns(r, "netns", netns);
        into->netns = std::move(netns);
        into->netns_key = r.key_path("netns");
      }
      r.finish();
    }
    // The admin's default (config.h): "*" and whatever limits.netns allows.
    if (limits.admin.netns_key == kAdminNetnsDefaultKey) {
      limits.admin.netns = std::vector<std::string>{"*"};
      limits.admin.netns->insert(limits.admin.netns->end(), limits.netns.begin(),
                                 limits.netns.end());
    }
    roles.finish();
  }
  s.finish();
}

void read_budget_values(Section& s, Budget& b) {
  s.bounded("bps", b.bps, 0.0, kMaxBudgetBps);
  s.bounded("bytes_per_day", b.bytes_per_day, 0.0, kMaxBudgetBps / 8 * 86'400);
}

void read_budget(Section& s, Budget& b) {
  read_budget_values(s, b);
  s.finish();
}

void read_budgets(Section s, Budgets& budgets) {
  for (auto [name, into] : {std::pair{"global", &budgets.global}, std::pair{"user", &budgets.user},
                            std::pair{"node", &budgets.node}}) {
    Section b = s.section(name);
    read_budget(b, *into);
  }
  s.each("users", [&](Section& u) {
    std::string name = u.required<std::string>("name");
    Budget b = budgets.user;
    read_budget_values(u, b);
    if (!budgets.users.emplace(name, b).second)
      u.fail("name", fmt::format("duplicate budget for user '{}'", name));
  });
  s.finish();
}

std::filesystem::path resolve(const std::filesystem::path& base, const std::filesystem::path& p) {
  return p.is_absolute() ? p : base / p;
}

// True for an address that only this machine can reach: 127.0.0.0/8, ::1
// and "localhost". A name that DNS resolves is not trusted to stay loopback.
bool is_loopback(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

// The API's TLS keys go together, and a listener that others can reach
// speaks TLS unless the config says plain text on purpose.
void check_api_security(const Section& s, const ManagerConfig& m) {
  if (m.tls_cert.empty() != m.tls_key.empty())
    s.fail(m.tls_cert.empty() ? "tls_key" : "tls_cert",
           "manager.tls_cert and manager.tls_key go together: give both or neither");
  if (!m.tls_client_ca.empty() && m.tls_cert.empty())
    s.fail("tls_client_ca", "needs manager.tls_cert and manager.tls_key (TLS)");
  if (m.tls_cert.empty() && !m.insecure_plaintext && !is_loopback(m.xmlrpc.host))
    s.fail("xmlrpc_listen",
           fmt::format("{} is not a loopback address: give manager.tls_cert and manager.tls_key "
                       "(TLS), or set manager.insecure_plaintext: true to serve plain HTTP there",
                       m.xmlrpc.host));
}

}  // namespace

const char* role_name(Role role) {
  switch (role) {
    case Role::reader:
      return "reader";
    case Role::user:
      return "user";
    case Role::service:
      return "service";
    case Role::admin:
      return "admin";
  }
  return "?";
}

std::string format_token_hash(const TokenHash& hash) {
  return fmt::format("{}:{}:{}:{}", kTokenHashScheme, hash.length, to_hex(hash.salt),
                     to_hex(hash.digest));
}

Result<TokenHash> parse_token_hash(std::string_view text) {
  const std::string expected = fmt::format(
      "expected {}:LENGTH:SALT_HEX:DIGEST_HEX as `flexmon-manager hash-token` prints it",
      kTokenHashScheme);
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    auto colon = text.find(':', start);
    parts.push_back(text.substr(start, colon == std::string_view::npos ? colon : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  if (parts.size() != 4) return fail(ErrorCode::kInvalidInput, expected);
  if (parts[0] != kTokenHashScheme)
    return fail(ErrorCode::kInvalidInput,
                fmt::format("unknown scheme (only {}); {}", kTokenHashScheme, expected));
  TokenHash hash;
  auto [end, ec] = std::from_chars(parts[1].data(), parts[1].data() + parts[1].size(), hash.length);
  if (ec != std::errc() || end != parts[1].data() + parts[1].size() || parts[1].empty())
    return fail(ErrorCode::kInvalidInput,
                "LENGTH: expected the token's length in characters; " + expected);
  if (hash.length < kMinTokenChars || hash.length > kMaxTokenChars)
    return fail(
        ErrorCode::kInvalidInput,
        fmt::format(
            "the token is {} characters; tokens must be {} to {} characters (at least 128 random "
            "bits): `flexmon-manager hash-token --generate` makes one",
            hash.length, kMinTokenChars, kMaxTokenChars));
  auto salt = from_hex(parts[2]);
  if (!salt || salt->size() < kMinSaltBytes || salt->size() > kMaxSaltBytes)
    return fail(ErrorCode::kInvalidInput, fmt::format("SALT_HEX: expected {} to {} hex digits",
                                                      2 * kMinSaltBytes, 2 * kMaxSaltBytes));
  auto digest = from_hex(parts[3]);
  if (!digest || digest->size() != kDigestBytes)
    return fail(ErrorCode::kInvalidInput,
                fmt::format("DIGEST_HEX: expected {} hex digits", 2 * kDigestBytes));
  hash.salt = std::move(*salt);
  hash.digest = std::move(*digest);
  return hash;
}

std::string Endpoint::to_string() const {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                             : fmt::format("{}:{}", host, port);
}

std::vector<NodeKey> NodeConfig::all_keys() const {
  return keys.empty() ? std::vector<NodeKey>{NodeKey{key_id, key, false}} : keys;
}

const NodeConfig* Config::find_node(const std::string& id) const {
  auto it = std::find_if(nodes.begin(), nodes.end(), [&](const auto& n) { return n.id == id; });
  return it == nodes.end() ? nullptr : &*it;
}

const UserConfig* Config::find_user(const std::string& name) const {
  auto it = std::find_if(users.begin(), users.end(), [&](const auto& u) { return u.name == name; });
  return it == users.end() ? nullptr : &*it;
}

Endpoint Config::manager_for_probers() const {
  return prober.manager ? *prober.manager : manager.control;
}

std::vector<Endpoint> Config::collectors_for_probers() const {
  return prober.collectors.empty() ? std::vector<Endpoint>{collector.listen} : prober.collectors;
}

std::uint16_t Config::responder_port(const NodeConfig& node) const {
  return node.responder_port != 0 ? node.responder_port : prober.responder_port;
}

EffectiveLimits Config::limits_for(Role role) const {
  // A reader makes no requests: the general limits stand for it in messages.
  static const RoleLimits kNone;
  const RoleLimits& r = role == Role::admin     ? limits.admin
                        : role == Role::service ? limits.service
                        : role == Role::user    ? limits.user
                                                : kNone;
  return {r.min_interval_s.value_or(limits.min_interval_s),
          r.max_duration_s.value_or(limits.max_duration_s),
          r.max_paths_per_request.value_or(limits.max_paths_per_request),
          r.max_requests_per_user.value_or(limits.max_requests_per_user),
          r.max_paths_per_user.value_or(limits.max_paths_per_user),
          r.netns.value_or(limits.netns),
          r.netns ? r.netns_key : "limits.netns"};
}

Config parse_config(const std::string& text, const std::string& name,
                    const std::filesystem::path& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}:{}: not valid YAML: {}", name, e.mark.line + 1, e.msg));
  }
  if (!root.IsMap()) throw ConfigError(fmt::format("{}:1: expected a mapping at the top", name));

  Config config;
  config.file = name;
  Section top(root, "", name);

  std::filesystem::path data_dir = ".";
  top.optional("data_dir", data_dir);
  config.data_dir = resolve(base_dir, data_dir).lexically_normal();

  {
    Section s = top.section("manager");
    auto& m = config.manager;
    s.optional("xmlrpc_listen", m.xmlrpc);
    s.optional("control_listen", m.control);
    s.optional("state_db", m.state_db);
    s.bounded("max_connections", m.max_connections, 1u, kMaxConnections);
    s.bounded("max_connections_per_client", m.max_connections_per_client, 1u, kMaxConnections);
    s.bounded("http_timeout_s", m.http_timeout_s, 1u, kMaxHttpTimeoutS);
    s.bounded("keepalive_max_requests", m.keepalive_max_requests, 1u, kMaxKeepaliveRequests);
    s.bounded("max_request_bytes", m.max_request_bytes, kMinRequestBytes, kMaxRequestBytes);
    s.bounded("max_nesting", m.max_nesting, kMinNesting, kMaxNesting);
    s.bounded("dead_after_s", m.dead_after_s, kMinDeadAfterS, kMaxDeadAfterS);
    s.bounded("rendered_rows_mb", m.rendered_rows_mb, 0u, kMaxRenderedRowsMb);
    read_control_limits(s, m);
    s.optional("tls_cert", m.tls_cert);
    s.optional("tls_key", m.tls_key);
    s.optional("tls_client_ca", m.tls_client_ca);
    s.optional("insecure_plaintext", m.insecure_plaintext);
    check_api_security(s, m);
    s.finish();
    m.state_db = resolve(config.data_dir, m.state_db);
    for (auto* tls_file : {&m.tls_cert, &m.tls_key, &m.tls_client_ca})
      if (!tls_file->empty()) *tls_file = resolve(config.data_dir, *tls_file);
  }
  {
    Section s = top.section("collector");
    s.optional("listen", config.collector.listen);
    s.optional("cache_db", config.collector.cache_db);
    s.bounded("max_wal_mb", config.collector.max_wal_mb, 1u, kMaxWalMb);
    s.finish();
    config.collector.cache_db = resolve(config.data_dir, config.collector.cache_db);
  }
  {
    Section s = top.section("prober");
    auto& p = config.prober;
    if (s.has("manager")) p.manager = s.required<Endpoint>("manager");
    YAML::Node collectors = s.take("collectors");
    if (collectors.IsDefined() && !collectors.IsNull()) {
      if (!collectors.IsSequence()) s.error_at(collectors, "prober.collectors", "expected a list");
      for (std::size_t i = 0; i < collectors.size(); ++i)
        p.collectors.push_back(
            s.convert<Endpoint>(collectors[i], fmt::format("prober.collectors[{}]", i)));
    }
    s.bounded("responder_port", p.responder_port, std::uint16_t{1}, std::uint16_t{65535});
    s.optional("state_dir", p.state_dir);
    s.bounded("heartbeat_s", p.heartbeat_s, kMinHeartbeatS, kMaxHeartbeatS);
    Section spool = s.section("spool");
    spool.bounded("max_results", p.spool_max_results, std::uint64_t{1}, kMaxSpoolResults);
    spool.optional("history", p.spool_history);
    spool.finish();
    s.finish();
    p.state_dir = resolve(config.data_dir, p.state_dir);
  }
  {
    Section s = top.section("archive");
    auto& a = config.archive;
    s.optional("postgres", a.postgres);
    s.optional("sqlite_db", a.sqlite_db);
    s.bounded("flush_interval_s", a.flush_interval_s, kMinFlushIntervalS, kWeekS);
    s.bounded("horizon_s", a.horizon_s, 0.0, kYearS);
    s.bounded("retention_s", a.retention_s, 0.0, 10 * kYearS);
    s.bounded("flush_batch_rows", a.flush_batch_rows, 1u, kMaxFlushBatchRows);
    s.optional("dump_dir", a.dump_dir);
    s.optional("dump_weekly", a.dump_weekly);
    // Less than a week: the next week's dump must not fall due before this one's.
    s.bounded("dump_delay_s", a.dump_delay_s, 0.0, kWeekS - 1);
    s.finish();
    a.sqlite_db = resolve(config.data_dir, a.sqlite_db);
    a.dump_dir = resolve(config.data_dir, a.dump_dir);
  }
  read_limits(top.section("limits"), config.limits);
  read_budgets(top.section("budgets"), config.budgets);

  // Sets, not find_node(): a fleet of 100,000 nodes is checked in linear time.
  std::unordered_set<std::string> node_ids, user_names;
  top.each("nodes", [&](Section& s) {
    NodeConfig node;
    node.id = s.required<std::string>("id");
    node.site = s.required<std::string>("site");
    node.address = s.required<std::string>("address");
    s.bounded("responder_port", node.responder_port, std::uint16_t{1}, std::uint16_t{65535});
    read_node_keys(s, node);
    if (node.id.empty() || node.id.size() > 64 ||
        node.id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789-_.") != std::string::npos)
      s.fail("id", "1 to 64 letters, digits, '-', '_' or '.'");
    if (!node_ids.insert(node.id).second)
      s.fail("id", fmt::format("duplicate node id '{}'", node.id));
    config.nodes.push_back(std::move(node));
  });
  top.each("users", [&](Section& s) {
    UserConfig user;
    user.name = s.required<std::string>("name");
    // A token in clear is refused, not hashed on the fly: the file would
    // still hold it, and every copy and backup of the file with it.
    if (s.has("token"))
      s.fail("token",
             "tokens are not stored in clear: replace this key with token_hash, the line that "
             "`flexmon-manager hash-token` prints for the token on its standard input "
             "(schemas/config.md, \"Users and tokens\")");
    auto hash = parse_token_hash(s.required<std::string>("token_hash"));
    if (!hash) s.fail("token_hash", hash.error().message);
    user.token_hash = std::move(*hash);
    s.optional("role", user.role);
    if (user.name.empty() || user.name.find(':') != std::string::npos || user.name.size() > 64)
      s.fail("name", "1 to 64 characters, no ':'");
    if (!user_names.insert(user.name).second)
      s.fail("name", fmt::format("duplicate user '{}'", user.name));
    config.users.push_back(std::move(user));
  });
  top.finish();
  return config;
}

Config load_config(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError(fmt::format("{}: cannot read the config file", file.string()));
  std::stringstream text;
  text << in.rdbuf();
  auto base = std::filesystem::absolute(file).parent_path();
  Config config = parse_config(text.str(), file.string(), base);
  config.file = file;
  return config;
}

}  // namespace flexmon
