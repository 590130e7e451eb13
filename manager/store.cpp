#include "manager/store.h"

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

namespace flexmon::manager {

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS requests (
  num INTEGER PRIMARY KEY AUTOINCREMENT,
  owner TEXT NOT NULL,
  tool TEXT NOT NULL,
  mode TEXT NOT NULL,
  state TEXT NOT NULL,
  interval_s REAL NOT NULL,
  duration_s REAL,
  args TEXT NOT NULL,      -- JSON object of the tool's arguments
  paths TEXT NOT NULL,     -- JSON array of [src, dst]
  created_ns INTEGER NOT NULL,
  ends_ns INTEGER
);
)sql";

// Columns added after version 1 of the table: added to older files on open.
constexpr std::pair<const char*, const char*> kAddedColumns[] = {
    {"priority", "INTEGER NOT NULL DEFAULT 0"},
    {"netns", "TEXT NOT NULL DEFAULT ''"},
    {"revert", "TEXT"},  // JSON {at_ns, spec, ends_ns} of a temporary edit
};

nlohmann::json args_json(const RequestSpec& spec) {
  if (spec.tool == Tool::kAbw)
    return {{"max_rate_bps", spec.abw.max_rate_bps},
            {"max_bytes", spec.abw.max_bytes},
            {"max_duration_ms", spec.abw.max_duration_ms}};
  if (spec.tool == Tool::kThroughput)
    return {{"duration_ms", spec.throughput.duration_ms}, {"max_bytes", spec.throughput.max_bytes}};
  const auto& a = spec.latency;
  return {{"method", a.method}, {"count", a.count},           {"spacing_ms", a.spacing_ms},
          {"size", a.size},     {"timeout_ms", a.timeout_ms}, {"port", a.port}};
}

void read_args(const nlohmann::json& args, RequestSpec& spec) {
  if (spec.tool == Tool::kAbw) {
    spec.abw.max_rate_bps = args.at("max_rate_bps").get<std::uint64_t>();
    spec.abw.max_bytes = args.at("max_bytes").get<std::uint64_t>();
    spec.abw.max_duration_ms = args.at("max_duration_ms").get<std::uint32_t>();
  } else if (spec.tool == Tool::kThroughput) {
    spec.throughput.duration_ms = args.at("duration_ms").get<std::uint32_t>();
    spec.throughput.max_bytes = args.at("max_bytes").get<std::uint64_t>();
  } else {
    spec.latency.method = args.at("method").get<std::string>();
    spec.latency.count = args.at("count").get<std::uint32_t>();
    spec.latency.spacing_ms = args.at("spacing_ms").get<std::uint32_t>();
    spec.latency.size = args.at("size").get<std::uint32_t>();
    spec.latency.timeout_ms = args.at("timeout_ms").get<std::uint32_t>();
    spec.latency.port = args.value("port", 0u);
  }
}

// The editable part of a spec (a revert's target).
nlohmann::json editable_json(const RequestSpec& spec) {
  nlohmann::json j = {
      {"interval_s", spec.interval_s}, {"priority", spec.priority}, {"args", args_json(spec)}};
  if (spec.duration_s) j["duration_s"] = *spec.duration_s;
  return j;
}

void read_editable(const nlohmann::json& j, RequestSpec& spec) {
  spec.interval_s = j.at("interval_s").get<double>();
  spec.priority = j.at("priority").get<std::int32_t>();
  read_args(j.at("args"), spec);
  spec.duration_s.reset();
  if (j.contains("duration_s")) spec.duration_s = j.at("duration_s").get<double>();
}

std::string revert_json(const Request& r) {
  if (!r.revert) return {};
  nlohmann::json j = {{"at_ns", r.revert->at_ns}, {"spec", editable_json(r.revert->spec)}};
  if (r.revert->ends_ns) j["ends_ns"] = *r.revert->ends_ns;
  return j.dump();
}

}  // namespace

RequestStore::RequestStore(const std::filesystem::path& file) : db_(file) {
  // WAL with synchronous=NORMAL: a commit survives a crash or kill of the
  // manager (what a restart must not lose); only an OS crash or power loss
  // may take the last commits back. Saves an fsync per admission.
  db_.exec("PRAGMA synchronous=NORMAL");
  db_.exec(kSchema);
  std::set<std::string> columns;
  auto info = db_.prepare("PRAGMA table_info(requests)");
  while (info.step()) columns.insert(info.text(1));
  for (const auto& [name, type] : kAddedColumns)
    if (!columns.contains(name))
      db_.exec(std::string("ALTER TABLE requests ADD COLUMN ") + name + " " + type);
}

Request RequestStore::add(const std::string& owner, const RequestSpec& spec, UtcNs created_ns) {
  Request r;
  r.owner = owner;
  r.spec = spec;
  r.created_ns = created_ns;
  if (spec.duration_s)
    r.ends_ns = created_ns + static_cast<UtcNs>(std::llround(*spec.duration_s * 1e9));
  nlohmann::json paths = nlohmann::json::array();
  for (const auto& p : spec.paths) paths.push_back({p.src, p.dst});
  auto insert = db_.prepare(
      "INSERT INTO requests (owner, tool, mode, state, interval_s, duration_s, args, paths, "
      "created_ns, ends_ns, priority, netns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  insert.bind(1, owner)
      .bind(2, std::string(tool_name(spec.tool)))
      .bind(3, std::string(mode_name(spec.mode)));
  insert.bind(4, std::string(state_name(RequestState::active))).bind(5, spec.interval_s);
  if (spec.duration_s)
    insert.bind(6, *spec.duration_s);
  else
    insert.bind_null(6);
  insert.bind(7, args_json(spec).dump())
      .bind(8, paths.dump())
      .bind(9, static_cast<std::int64_t>(created_ns));
  if (r.ends_ns)
    insert.bind(10, static_cast<std::int64_t>(*r.ends_ns));
  else
    insert.bind_null(10);
  insert.bind(11, static_cast<std::int64_t>(spec.priority)).bind(12, spec.netns);
  insert.run();
  r.num = static_cast<std::uint64_t>(db_.last_insert_rowid());
  return r;
}

void RequestStore::set_state(std::uint64_t num, RequestState state) {
  auto update = db_.prepare("UPDATE requests SET state = ?, revert = NULL WHERE num = ?");
  update.bind(1, std::string(state_name(state))).bind(2, static_cast<std::int64_t>(num));
  update.run();
}

void RequestStore::update(const Request& r) {
  auto update = db_.prepare(
      "UPDATE requests SET interval_s = ?, duration_s = ?, args = ?, ends_ns = ?, priority = ?, "
      "revert = ? WHERE num = ?");
  update.bind(1, r.spec.interval_s);
  if (r.spec.duration_s)
    update.bind(2, *r.spec.duration_s);
  else
    update.bind_null(2);
  update.bind(3, args_json(r.spec).dump());
  if (r.ends_ns)
    update.bind(4, static_cast<std::int64_t>(*r.ends_ns));
  else
    update.bind_null(4);
  update.bind(5, static_cast<std::int64_t>(r.spec.priority));
  if (r.revert)
    update.bind(6, revert_json(r));
  else
    update.bind_null(6);
  update.bind(7, static_cast<std::int64_t>(r.num));
  update.run();
}

std::vector<Request> RequestStore::load_all() {
  std::vector<Request> out;
  auto select = db_.prepare(
      "SELECT num, owner, tool, mode, state, interval_s, duration_s, args, paths, created_ns, "
      "ends_ns, priority, netns, revert FROM requests ORDER BY num");
  while (select.step()) {
    Request r;
    r.num = static_cast<std::uint64_t>(select.int64(0));
    r.owner = select.text(1);
    auto tool = parse_tool(select.text(2));
    if (!tool)
      throw sqlite::SqliteError("request r" + std::to_string(r.num) + ": unknown tool '" +
                                select.text(2) + "'");
    r.spec.tool = *tool;
    r.spec.mode = select.text(3) == "oneshot" ? Mode::oneshot : Mode::continuous;
    auto state = state_from_name(select.text(4));
    if (!state)
      throw sqlite::SqliteError("request r" + std::to_string(r.num) + ": unknown state '" +
                                select.text(4) + "'");
    r.state = *state;
    r.spec.interval_s = select.real(5);
    if (!select.is_null(6)) r.spec.duration_s = select.real(6);
    read_args(nlohmann::json::parse(select.text(7)), r.spec);
    for (const auto& p : nlohmann::json::parse(select.text(8)))
      r.spec.paths.push_back({p.at(0).get<std::string>(), p.at(1).get<std::string>()});
    r.created_ns = select.int64(9);
    if (!select.is_null(10)) r.ends_ns = select.int64(10);
    r.spec.priority = static_cast<std::int32_t>(select.int64(11));
    r.spec.netns = select.text(12);
    if (!select.is_null(13)) {
      auto j = nlohmann::json::parse(select.text(13));
      Revert back;
      back.at_ns = j.at("at_ns").get<std::int64_t>();
      back.spec = r.spec;
      read_editable(j.at("spec"), back.spec);
      if (j.contains("ends_ns")) back.ends_ns = j.at("ends_ns").get<std::int64_t>();
      r.revert = std::move(back);
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace flexmon::manager
