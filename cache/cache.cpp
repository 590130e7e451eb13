#include "cache/cache.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cache/storage.h"
#include "common/sqlite.h"
#include "common/status.h"
#include "wire.pb.h"

namespace flexmon {

namespace {

std::string rtts_json(const wire::LatencyValues& values) {
  nlohmann::json array = nlohmann::json::array();
  for (std::int64_t rtt : values.rtt_ns()) {
    if (rtt < 0)
      array.push_back(nullptr);
    else
      array.push_back(rtt);
  }
  return array.dump();
}

std::vector<std::int64_t> parse_rtts(const std::string& text) {
  std::vector<std::int64_t> rtts;
  if (text.empty()) return rtts;
  auto array = nlohmann::json::parse(text, nullptr, false);
  if (!array.is_array()) return rtts;
  for (const auto& item : array)
    rtts.push_back(item.is_number_integer() ? item.get<std::int64_t>() : -1);
  return rtts;
}

}  // namespace

struct Cache::Impl {
  std::unique_ptr<sqlite::Database> owned;
  sqlite::Database& db;
  explicit Impl(const std::filesystem::path& file, bool read_only)
      : owned(read_only ? std::make_unique<sqlite::Database>(file, true)
                        : storage::open_cache_db(file)),
        db(*owned) {}
};

Cache::Cache(const std::filesystem::path& file, bool read_only)
    : impl_(std::make_unique<Impl>(file, read_only)) {}

Cache::~Cache() = default;

StoreOutcome Cache::store(const std::string& node, std::uint64_t boot_epoch,
                          const std::vector<const wire::Result*>& results) {
  return store_many({StoreGroup{node, boot_epoch, results}}).front();
}

sqlite::Database& Cache::database() { return impl_->db; }

std::vector<StoreOutcome> Cache::store_many(const std::vector<StoreGroup>& groups,
                                            const std::function<void(sqlite::Database&)>& also) {
  std::vector<StoreOutcome> outcomes;
  auto& db = impl_->db;
  sqlite::Transaction transaction(db);
  auto insert = db.prepare(
      "INSERT OR IGNORE INTO results (node, boot_epoch, seq, stream, tool, src, dst, start_ns, "
      "status, error, sent, received, duplicates, rtt_min_ns, rtt_avg_ns, rtt_median_ns, "
      "rtt_max_ns, rtt_stddev_ns, rtts_ns, committed_ns, estimate_bps, lower_bps, upper_bps, "
      "bytes_sent, duration_ns, throughput_bps) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
      "?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)");
  UtcNs now = utc_now_ns();
  for (const StoreGroup& group : groups) {
    StoreOutcome& outcome = outcomes.emplace_back();
    const std::string& node = group.node;
    std::uint64_t boot_epoch = group.boot_epoch;
    for (const wire::Result* result : group.results) {
      if (result->start_ns() < 0 || result->start_ns() >= kMaxStartNs) {
        if (outcome.rejected++ == 0)
          outcome.rejection = fmt::format(
              "result {} of node '{}': start_ns {} is outside 1970-01-01..2100-01-01 UTC",
              result->seq(), node.substr(0, 64), result->start_ns());
        continue;
      }
      insert.bind(1, std::string_view(node))
          .bind(2, static_cast<std::int64_t>(boot_epoch))
          .bind(3, static_cast<std::int64_t>(result->seq()))
          .bind(4, std::string_view(result->stream()))
          .bind(5, std::string_view(result->tool()))
          .bind(6, std::string_view(result->src()))
          .bind(7, std::string_view(result->dst()))
          .bind(8, static_cast<std::int64_t>(result->start_ns()))
          .bind(9, status_name(result->status()));
      if (result->error().empty())
        insert.bind_null(10);
      else
        insert.bind(10, std::string_view(result->error()));
      if (result->has_latency()) {
        const auto& l = result->latency();
        insert.bind(11, static_cast<std::int64_t>(l.sent()))
            .bind(12, static_cast<std::int64_t>(l.received()))
            .bind(13, static_cast<std::int64_t>(l.duplicates()));
        if (l.received() > 0) {
          insert.bind(14, static_cast<std::int64_t>(l.min_ns()))
              .bind(15, static_cast<std::int64_t>(l.avg_ns()))
              .bind(16, static_cast<std::int64_t>(l.median_ns()))
              .bind(17, static_cast<std::int64_t>(l.max_ns()))
              .bind(18, static_cast<std::int64_t>(l.stddev_ns()));
        } else {
          for (int i = 14; i <= 18; ++i) insert.bind_null(i);
        }
        insert.bind(19, rtts_json(l));
      } else {
        for (int i = 11; i <= 19; ++i) insert.bind_null(i);
      }
      insert.bind(20, static_cast<std::int64_t>(now));
      for (int i = 21; i <= 26; ++i) insert.bind_null(i);
      if (result->has_abw()) {
        const auto& a = result->abw();
        insert.bind(21, a.estimate_bps())
            .bind(22, a.lower_bps())
            .bind(23, a.upper_bps())
            .bind(24, static_cast<std::int64_t>(a.bytes_sent()))
            .bind(25, static_cast<std::int64_t>(a.duration_ns()));
      } else if (result->has_throughput()) {
        const auto& t = result->throughput();
        insert.bind(24, static_cast<std::int64_t>(t.bytes_sent()))
            .bind(25, static_cast<std::int64_t>(t.duration_ns()))
            .bind(26, t.throughput_bps());
      }
      insert.run();
      if (db.changes() > 0)
        ++outcome.stored;
      else
        ++outcome.duplicates;
    }
  }
  if (also) also(db);
  transaction.commit();
  return outcomes;
}

std::vector<LatencyRow> Cache::query_latency(const LatencyQuery& query) {
  std::string sql =
      "SELECT src, dst, start_ns, status, error, sent, received, duplicates, rtt_min_ns, "
      "rtt_avg_ns, rtt_median_ns, rtt_max_ns, rtt_stddev_ns, rtts_ns FROM results "
      "WHERE tool = 'latency' AND (?1 IS NULL OR src = ?1) AND (?2 IS NULL OR dst = ?2) "
      "AND (?3 IS NULL OR start_ns >= ?3) AND (?4 IS NULL OR start_ns < ?4)";
  if (query.latest_per_path) {
    // The newest row of each path, found through the (src, dst, start_ns) index.
    sql +=
        " AND start_ns = (SELECT MAX(r2.start_ns) FROM results r2 WHERE r2.tool = 'latency' "
        "AND r2.src = results.src AND r2.dst = results.dst "
        "AND (?3 IS NULL OR r2.start_ns >= ?3) AND (?4 IS NULL OR r2.start_ns < ?4))";
  }
  sql += " ORDER BY start_ns DESC, src, dst LIMIT ?5";
  auto select = impl_->db.prepare(sql);
  select.bind(1, query.src).bind(2, query.dst);
  if (query.from)
    select.bind(3, static_cast<std::int64_t>(*query.from));
  else
    select.bind_null(3);
  if (query.to)
    select.bind(4, static_cast<std::int64_t>(*query.to));
  else
    select.bind_null(4);
  select.bind(5, static_cast<std::int64_t>(query.limit));

  std::vector<LatencyRow> rows;
  while (select.step()) {
    LatencyRow row;
    row.src = select.text(0);
    row.dst = select.text(1);
    row.start_ns = select.int64(2);
    row.status = select.text(3);
    row.error = select.text(4);
    row.sent = select.int64(5);
    row.received = select.int64(6);
    row.duplicates = select.int64(7);
    auto optional_int = [&](int column) -> std::optional<std::int64_t> {
      if (select.is_null(column)) return std::nullopt;
      return select.int64(column);
    };
    row.min_ns = optional_int(8);
    row.avg_ns = optional_int(9);
    row.median_ns = optional_int(10);
    row.max_ns = optional_int(11);
    row.stddev_ns = optional_int(12);
    row.rtts_ns = parse_rtts(select.text(13));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::int64_t Cache::count_results() {
  auto count = impl_->db.prepare("SELECT COUNT(*) FROM results");
  count.step();
  return count.int64(0);
}

}  // namespace flexmon
