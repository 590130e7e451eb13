// flexmon's configuration: one YAML file shared by every process (each reads
// the sections it needs). Reference: schemas/config.md and
// schemas/config.example.yaml. Defaults live here, in one place.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace flexmon {

// A config error: the message names the file, the line and the key.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
  std::string to_string() const;
};

// One of a node's keys (nodes[].keys[]): frames name it by its id.
struct NodeKey {
  std::uint32_t id = 1;
  std::string key;       // raw bytes (hex in the file), 16 to 64 bytes
  bool retired = false;  // frames under it are refused and counted
};

struct NodeConfig {
  std::string id;
  std::string site;
  std::string address;               // where the node's responder listens
  std::uint16_t responder_port = 0;  // 0: prober.responder_port
  // The key the node seals with: its active key of the highest id.
  std::string key;
  std::uint32_t key_id = 1;
  // Every key of the node, active and retired, highest id first (from
  // `keys`, or `key` as key 1). Empty in a NodeConfig built in code: then
  // {key_id, key} is its only key.
  std::vector<NodeKey> keys{};

  // `keys`, or {key_id, key} when it is empty.
  std::vector<NodeKey> all_keys() const;
};

// What a caller may do (schemas/xmlrpc-api.md, "Roles"): a reader only reads
// (query.*, node.list); a user also asks for measurements and manages their
// own requests; a service is flexmon's own automatic client (the site mesh)
// and may do what a user may; an admin sees and manages every request.
enum class Role { reader, user, service, admin };

// "reader", "user", "service", "admin".
const char* role_name(Role role);

// The shortest and longest token accepted. Tokens are machine-made secrets of
// at least 128 random bits (22 base64url characters hold 132): a fast hash
// protects them only because they cannot be guessed (schemas/config.md).
constexpr std::uint32_t kMinTokenChars = 22;
constexpr std::uint32_t kMaxTokenChars = 256;

// A token as the config holds it (users[].token_hash): never the token, but
// HMAC-SHA256 keyed with a random salt, and the token's length. Written
// "hmac-sha256:LENGTH:SALT_HEX:DIGEST_HEX" (`flexmon-manager hash-token`).
struct TokenHash {
  std::uint32_t length = 0;  // characters of the token, kMinTokenChars..kMaxTokenChars
  std::string salt;          // raw bytes, 16 to 64
  std::string digest;        // raw bytes, 32: HMAC-SHA256(key = salt, message = token)
};

// The text form of a hash, as users[].token_hash holds it.
std::string format_token_hash(const TokenHash& hash);

// Reads the text form; the error says what is wrong (never quoting the text).
Result<TokenHash> parse_token_hash(std::string_view text);

struct UserConfig {
  std::string name;
  TokenHash token_hash;
  Role role = Role::user;
};

// Bounds of the latency tool's arguments, checked by the manager.
struct LatencyLimits {
  std::uint32_t max_count = 100;
  std::uint32_t min_spacing_ms = 10;
  std::uint32_t max_spacing_ms = 10'000;
  std::uint32_t min_size = 16;
  std::uint32_t max_size = 1472;
  std::uint32_t min_timeout_ms = 10;
  std::uint32_t max_timeout_ms = 10'000;
};

// Caps of the available-bandwidth tool's arguments, and its shortest interval.
struct AbwLimits {
  std::uint64_t max_rate_bps = 100'000'000;
  std::uint64_t max_bytes = 10'000'000;
  std::uint32_t max_duration_ms = 10'000;
  double min_interval_s = 60.0;
};

// Caps of the throughput tool's arguments, and its shortest interval.
struct ThroughputLimits {
  std::uint32_t max_duration_ms = 10'000;
  std::uint64_t max_bytes = 100'000'000;
  double min_interval_s = 300.0;
};

// Names the admin's default netns allow-list in messages (Limits::admin).
inline constexpr const char* kAdminNetnsDefaultKey = "limits.roles.admin.netns, by default,";

// Per-role overrides of the request limits below (unset: the general value).
struct RoleLimits {
  std::optional<double> min_interval_s;
  std::optional<double> max_duration_s;
  std::optional<std::uint32_t> max_paths_per_request;
  std::optional<std::uint32_t> max_requests_per_user;
  std::optional<std::uint32_t> max_paths_per_user;
  // The network namespaces a request of this role may name (see
  // Limits::netns); set, it replaces limits.netns for the role.
  std::optional<std::vector<std::string>> netns;
  std::string netns_key;  // the config key `netns` came from, for messages
};

// limits.roles.admin before the config says anything (Limits::admin).
inline RoleLimits admin_role_defaults() {
  RoleLimits admin;
  admin.netns = std::vector<std::string>{"*"};
  admin.netns_key = kAdminNetnsDefaultKey;
  return admin;
}

struct Limits {
  double min_interval_s = 1.0;
  double max_interval_s = 86'400.0;
  double max_duration_s = 30.0 * 86'400.0;
  std::uint32_t max_paths_per_request = 10'000;
  std::uint32_t max_requests_per_user = 1'000;  // active requests
  std::uint32_t max_paths_per_user = 100'000;   // paths over the user's active requests
  LatencyLimits latency;
  AbwLimits abw;
  ThroughputLimits throughput;
  // The network namespaces a request may name: names under /run/netns or
  // absolute paths, each entry a glob pattern (fnmatch, FNM_PATHNAME; an
  // entry without '/' stands for /run/netns/ENTRY). Empty: none.
  std::vector<std::string> netns;
  RoleLimits user;     // limits.roles.user
  RoleLimits service;  // limits.roles.service
  // limits.roles.admin. Unless it sets netns, admins may name what
  // limits.netns allows and any namespace under /run/netns ("*"): those
  // exist only because root on the node made them (`ip netns add`), for
  // measurements; a /proc/PID/ns/net path reaches into any process on the
  // node (another tenant's container), so not even admins get those unless
  // the config lists them.
  RoleLimits admin = admin_role_defaults();
};

// Bandwidth budgets (schemas/config.md, "budgets"): average bits per second
// and bytes per day of probe traffic; 0 = unlimited.
struct Budget {
  double bps = 0;
  double bytes_per_day = 0;
};

struct Budgets {
  Budget global;                        // every stream
  Budget user;                          // each user (what the user's requests would cost alone)
  Budget node;                          // each node, as the source or destination of streams
  std::map<std::string, Budget> users;  // per-user overrides of `user`
};

// The request limits that apply to a role: the general ones with the role's
// overrides.
struct EffectiveLimits {
  double min_interval_s;
  double max_duration_s;
  std::uint32_t max_paths_per_request;
  std::uint32_t max_requests_per_user;
  std::uint32_t max_paths_per_user;
  std::vector<std::string> netns;  // allowed namespace patterns (Limits::netns)
  std::string netns_key;           // where they were configured, for messages
};

struct ManagerConfig {
  Endpoint xmlrpc{"127.0.0.1", 8470};
  Endpoint control{"127.0.0.1", 8471};
  std::filesystem::path state_db = "manager.db";
  std::uint32_t max_connections = 4096;           // concurrent HTTP connections
  std::uint32_t max_connections_per_client = 64;  // of those, from one client address
  std::uint32_t http_timeout_s = 15;              // per request, and keep-alive idle
  std::uint32_t keepalive_max_requests = 1000;    // calls per HTTP connection (1: no keep-alive)
  std::uint32_t max_request_bytes = 1 << 20;
  std::uint32_t max_nesting = 16;
  double dead_after_s = 30.0;  // no contact for this long: dead
  // The control channel's edge (schemas/config.md): connections in all, and
  // not yet registered ones per peer address; how long a connection may take
  // to register, and a frame from its length to its last byte.
  std::uint32_t control_max_connections = 4096;
  std::uint32_t control_max_unregistered_per_address = 8;
  std::uint32_t control_register_timeout_s = 10;
  std::uint32_t control_frame_timeout_s = 30;
  // Memory for query answers' rows kept as XML, shown again without reading
  // them whole (0: off). Stored results never change.
  std::uint32_t rendered_rows_mb = 64;
  // TLS on the XML-RPC API: both or neither (schemas/xmlrpc-api.md, "TLS").
  std::filesystem::path tls_cert;       // PEM certificate chain
  std::filesystem::path tls_key;        // PEM private key
  std::filesystem::path tls_client_ca;  // set: clients need a certificate it signed
  // Plain HTTP on an address that is not loopback: refused unless this says so.
  bool insecure_plaintext = false;
};

struct CollectorConfig {
  Endpoint listen{"127.0.0.1", 8472};
  std::filesystem::path cache_db = "cache.db";
  // The cache's WAL is restarted once it holds this much; the file is
  // written full (plus 16 MiB) at start (schemas/config.md).
  std::uint32_t max_wal_mb = 256;
};

// Long-term storage: where the collector's cache is flushed, when, and how
// long the cache keeps flushed results (schemas/config.md, "archive").
struct ArchiveConfig {
  std::string postgres;  // libpq connection string; empty: the SQLite file below
  std::filesystem::path sqlite_db = "archive.db";
  double flush_interval_s = 3600.0;     // between flushes
  double horizon_s = 3600.0;            // results committed more recently stay in the cache only
  double retention_s = 7.0 * 86'400.0;  // archived results stay in the cache this long
  std::uint32_t flush_batch_rows = 1'000'000;  // rows per archive transaction, at most
  std::filesystem::path dump_dir = "dumps";    // `flexmon-admin dump` default output, weekly dumps
  bool dump_weekly = false;        // the collector writes each week's dump into dump_dir
  double dump_delay_s = 86'400.0;  // after the week's end (late results arrive meanwhile)
};

struct ProberConfig {
  std::optional<Endpoint> manager;   // default: manager.control
  std::vector<Endpoint> collectors;  // default: [collector.listen]
  std::uint16_t responder_port = 8473;
  std::filesystem::path state_dir = "prober";  // per node: STATE_DIR/NODE_ID
  double heartbeat_s = 5.0;
  // prober.spool: the durable result spool, STATE_DIR/NODE_ID/spool.db.
  // Results kept until acknowledged; size it for 24 h of the node's load
  // (the prober logs how many hours it holds at the assigned load).
  std::uint64_t spool_max_results = 10'000'000;
  // Records every (epoch, seq) ever spooled in table `history` (fault tests:
  // what the prober produced). Grows without bound: off in production.
  bool spool_history = false;
};

struct Config {
  std::filesystem::path file;      // where it was read from
  std::filesystem::path data_dir;  // relative paths below are resolved here
  ManagerConfig manager;
  CollectorConfig collector;
  ProberConfig prober;
  ArchiveConfig archive;
  Limits limits;
  Budgets budgets;
  std::vector<NodeConfig> nodes;
  std::vector<UserConfig> users;

  const NodeConfig* find_node(const std::string& id) const;
  const UserConfig* find_user(const std::string& name) const;
  // The manager endpoint probers dial, and the collectors they send to.
  Endpoint manager_for_probers() const;
  std::vector<Endpoint> collectors_for_probers() const;
  // The port a node's responder listens on.
  std::uint16_t responder_port(const NodeConfig& node) const;
  // The request limits of `role`.
  EffectiveLimits limits_for(Role role) const;
};

// Reads and validates a config file. Throws ConfigError naming file, line and
// key for unknown keys, wrong types, bad values and missing required keys.
Config load_config(const std::filesystem::path& file);

// The same, from text (for tests); `name` stands for the file in messages.
Config parse_config(const std::string& text, const std::string& name,
                    const std::filesystem::path& base_dir);

}  // namespace flexmon
