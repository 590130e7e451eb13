#include "manager/store.h"

#include <cmath>

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

}  // namespace

RequestStore::RequestStore(const std::filesystem::path& file) : db_(file) { db_.exec(kSchema); }

Request RequestStore::add(const std::string& owner, const RequestSpec& spec, UtcNs created_ns) {
  Request r;
  r.owner = owner;
  r.spec = spec;
  r.created_ns = created_ns;
  if (spec.duration_s)
    r.ends_ns = created_ns + static_cast<UtcNs>(std::llround(*spec.duration_s * 1e9));
  const auto& a = spec.latency;
  nlohmann::json args = {{"method", a.method},
                         {"count", a.count},
                         {"spacing_ms", a.spacing_ms},
                         {"size", a.size},
                         {"timeout_ms", a.timeout_ms}};
  nlohmann::json paths = nlohmann::json::array();
  for (const auto& p : spec.paths) paths.push_back({p.src, p.dst});
  auto insert = db_.prepare(
      "INSERT INTO requests (owner, tool, mode, state, interval_s, duration_s, args, paths, "
      "created_ns, ends_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  insert.bind(1, owner).bind(2, spec.tool).bind(3, std::string(mode_name(spec.mode)));
  insert.bind(4, std::string(state_name(RequestState::active))).bind(5, spec.interval_s);
  if (spec.duration_s)
    insert.bind(6, *spec.duration_s);
  else
    insert.bind_null(6);
  insert.bind(7, args.dump()).bind(8, paths.dump()).bind(9, static_cast<std::int64_t>(created_ns));
  if (r.ends_ns)
    insert.bind(10, static_cast<std::int64_t>(*r.ends_ns));
  else
    insert.bind_null(10);
  insert.run();
  r.num = static_cast<std::uint64_t>(db_.last_insert_rowid());
  return r;
}

void RequestStore::set_state(std::uint64_t num, RequestState state) {
  auto update = db_.prepare("UPDATE requests SET state = ? WHERE num = ?");
  update.bind(1, std::string(state_name(state))).bind(2, static_cast<std::int64_t>(num));
  update.run();
}

std::vector<Request> RequestStore::load_all() {
  std::vector<Request> out;
  auto select = db_.prepare(
      "SELECT num, owner, tool, mode, state, interval_s, duration_s, args, paths, created_ns, "
      "ends_ns FROM requests ORDER BY num");
  while (select.step()) {
    Request r;
    r.num = static_cast<std::uint64_t>(select.int64(0));
    r.owner = select.text(1);
    r.spec.tool = select.text(2);
    r.spec.mode = select.text(3) == "oneshot" ? Mode::oneshot : Mode::continuous;
    auto state = state_from_name(select.text(4));
    if (!state)
      throw sqlite::SqliteError("request r" + std::to_string(r.num) + ": unknown state '" +
                                select.text(4) + "'");
    r.state = *state;
    r.spec.interval_s = select.real(5);
    if (!select.is_null(6)) r.spec.duration_s = select.real(6);
    auto args = nlohmann::json::parse(select.text(7));
    r.spec.latency.method = args.at("method").get<std::string>();
    r.spec.latency.count = args.at("count").get<std::uint32_t>();
    r.spec.latency.spacing_ms = args.at("spacing_ms").get<std::uint32_t>();
    r.spec.latency.size = args.at("size").get<std::uint32_t>();
    r.spec.latency.timeout_ms = args.at("timeout_ms").get<std::uint32_t>();
    for (const auto& p : nlohmann::json::parse(select.text(8)))
      r.spec.paths.push_back({p.at(0).get<std::string>(), p.at(1).get<std::string>()});
    r.created_ns = select.int64(9);
    if (!select.is_null(10)) r.ends_ns = select.int64(10);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace flexmon::manager
