#include "storage/flusher.h"

#include <algorithm>
#include <chrono>
#include <mutex>

#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/log.h"
#include "storage/archive.h"
#include "storage/periodic_job.h"

namespace flexmon {

namespace {

constexpr double kNsPerS = 1e9;

std::int64_t archived_id(sqlite::Database& cache) {
  auto select = cache.prepare("SELECT value FROM cache_meta WHERE key = 'archived_id'");
  return select.step() ? std::stoll(select.text(0)) : 0;
}

// Records in the cache how far the archive has it (never moves backwards).
void mark_archived(sqlite::Database& cache, std::int64_t id) {
  auto update = cache.prepare(
      "INSERT INTO cache_meta (key, value) VALUES ('archived_id', ?1) ON CONFLICT (key) DO UPDATE "
      "SET value = excluded.value WHERE CAST(cache_meta.value AS INTEGER) < CAST(excluded.value AS "
      "INTEGER)");
  update.bind(1, std::to_string(id)).run();
}

FlushLag lag_of(sqlite::Database& cache, UtcNs now) {
  FlushLag lag;
  lag.archived_id = archived_id(cache);
  auto select = cache.prepare("SELECT COUNT(*), MIN(committed_ns) FROM results WHERE id > ?1");
  select.bind(1, lag.archived_id);
  select.step();
  lag.rows = select.int64(0);
  if (!select.is_null(1))
    lag.seconds = std::max(0.0, static_cast<double>(now - select.int64(1)) / kNsPerS);
  return lag;
}

// The id up to which the flush copies: the last row committed at or before
// `cutoff`, found by a binary search over id above `lower` (the archive's
// watermark), or `lower` if none; the last row itself when it qualifies. Ids grow in commit order
// (one writer, AUTOINCREMENT), so committed_ns grows with id unless the realtime clock stepped
// back; then the search still ends on some row committed by the cutoff (a flush may take rows
// younger than the horizon, which costs nothing: they are archived early, and retention deletes
// only archived rows), and once the clock passes every committed_ns it reaches the last row, so
// nothing stays unflushed for longer than the step. Every id below a committed one is committed or
// never will be: the flush copies only rows that are final.
std::int64_t last_committed_by(sqlite::Database& cache, std::int64_t lower, UtcNs cutoff) {
  // The first row at or after an id: retention leaves gaps anywhere.
  auto at_or_after =
      cache.prepare("SELECT id, committed_ns FROM results WHERE id >= ?1 ORDER BY id LIMIT 1");
  auto last = cache.prepare("SELECT id, committed_ns FROM results ORDER BY id DESC LIMIT 1");
  if (!last.step() || last.int64(0) <= lower) return lower;
  if (last.int64(1) <= cutoff) return last.int64(0);
  // Invariant: `found` is `lower` or a row committed by the cutoff; no row
  // at or after `beyond` is known to be.
  std::int64_t found = lower, beyond = last.int64(0);
  while (beyond - found > 1) {
    std::int64_t middle = found + (beyond - found) / 2;
    at_or_after.reset();
    at_or_after.bind(1, middle);
    if (at_or_after.step() && at_or_after.int64(0) < beyond && at_or_after.int64(1) <= cutoff)
      found = at_or_after.int64(0);
    else
      beyond = middle;
  }
  return found;
}

// Deletes, in short transactions (the collector writes meanwhile), archived
// rows that started before the retention.
std::int64_t apply_retention(sqlite::Database& cache, double retention_s, UtcNs now,
                             std::stop_token stop) {
  std::int64_t upto = archived_id(cache);
  UtcNs before = now - static_cast<std::int64_t>(retention_s * kNsPerS);
  auto remove = cache.prepare(
      "DELETE FROM results WHERE id IN (SELECT id FROM results WHERE id <= ?1 AND start_ns < ?2 "
      "LIMIT 10000)");
  std::int64_t deleted = 0;
  while (!stop.stop_requested()) {
    sqlite::Transaction transaction(cache);
    remove.bind(1, upto).bind(2, before).run();
    int changed = cache.changes();
    transaction.commit();
    deleted += changed;
    if (changed == 0) break;
  }
  return deleted;
}

// Throws sqlite::UnwritableError when the cache's files cannot be written:
// every step of a flush may write the cache's -shm (even a read records its
// snapshot there), which is a SIGBUS then (sqlite::Database::unwritable).
void check_writable(const sqlite::Database& cache) {
  if (std::string why = cache.unwritable(); !why.empty())
    throw sqlite::UnwritableError("flush: the cache cannot be written: " + why);
}

}  // namespace

FlushLag flush_lag(const Config& config, const UtcClock& now) {
  auto cache = storage::open_cache_db(config.collector.cache_db);
  return lag_of(*cache, now());
}

std::optional<FlushStatus> last_flush(const Config& config) {
  auto cache = storage::open_cache_db(config.collector.cache_db);
  auto select = cache->prepare("SELECT value FROM cache_meta WHERE key = 'last_flush'");
  if (!select.step()) return std::nullopt;
  auto json = nlohmann::json::parse(select.text(0), nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return std::nullopt;
  FlushStatus status;
  status.at_ns = json.value("at_ns", std::int64_t{0});
  status.archive_ok = json.value("archive_ok", false);
  status.error = json.value("error", std::string());
  status.rows = json.value("rows", std::int64_t{0});
  status.last_ok_ns = json.value("last_ok_ns", std::int64_t{0});
  status.lag.rows = json.value("lag_rows", std::int64_t{0});
  status.lag.seconds = json.value("lag_s", 0.0);
  status.lag.archived_id = json.value("archived_id", std::int64_t{0});
  return status;
}

namespace {

void record_status(sqlite::Database& cache, const FlushReport& report, UtcNs now) {
  UtcNs last_ok = 0;
  {
    auto select = cache.prepare("SELECT value FROM cache_meta WHERE key = 'last_flush'");
    if (select.step()) {
      auto previous = nlohmann::json::parse(select.text(0), nullptr, false);
      if (previous.is_object()) last_ok = previous.value("last_ok_ns", std::int64_t{0});
    }
  }
  if (report.archive_ok) last_ok = now;
  nlohmann::json json{{"at_ns", now},
                      {"archive_ok", report.archive_ok},
                      {"error", report.error},
                      {"rows", report.rows},
                      {"last_ok_ns", last_ok},
                      {"lag_rows", report.lag.rows},
                      {"lag_s", report.lag.seconds},
                      {"archived_id", report.lag.archived_id}};
  auto upsert = cache.prepare(
      "INSERT INTO cache_meta (key, value) VALUES ('last_flush', ?1) ON CONFLICT (key) DO UPDATE "
      "SET value = excluded.value");
  upsert.bind(1, json.dump()).run();
}

}  // namespace

FlushReport flush_once(const Config& config, const FlushHook& hook, std::stop_token stop,
                       const UtcClock& now) {
  auto log = logger("flush");
  FlushReport report;
  auto cache = storage::open_cache_db(config.collector.cache_db);
  std::string uuid = storage::cache_uuid(*cache);
  try {
    auto archive = storage::Archive::open(config, stop);
    // The archive is the truth; the cache's mark only catches up with it.
    std::int64_t lower = archive->watermark(uuid);
    mark_archived(*cache, lower);

    UtcNs cutoff = now() - static_cast<std::int64_t>(config.archive.horizon_s * kNsPerS);
    std::int64_t upper = last_committed_by(*cache, lower, cutoff);

    while (lower < upper) {
      check_writable(*cache);
      std::int64_t batch_upper =
          std::min<std::int64_t>(upper, lower + config.archive.flush_batch_rows);
      report.rows += archive->append(*cache, uuid, batch_upper, hook, stop);
      if (hook) hook("after_archive_commit");
      mark_archived(*cache, batch_upper);
      if (hook) hook("after_cache_mark");
      lower = batch_upper;
    }
  } catch (const storage::Cancelled&) {
    report.cancelled = true;
    log->info("flush: stopped before the end ({} rows archived); the next run goes on",
              report.rows);
    return report;
  } catch (const storage::ArchiveError& e) {
    report.archive_ok = false;
    report.error = e.what();
  }
  report.deleted = apply_retention(*cache, config.archive.retention_s, now(), stop);
  if (hook) hook("after_retention");
  check_writable(*cache);
  const UtcNs ended = now();
  report.lag = lag_of(*cache, ended);
  record_status(*cache, report, ended);
  if (report.archive_ok)
    log->info("flush: {} rows archived, {} deleted from the cache; behind by {} rows, {:.0f} s",
              report.rows, report.deleted, report.lag.rows, report.lag.seconds);
  else
    log->warn("flush: archive unavailable ({}); the cache keeps {} rows, {:.0f} s behind",
              report.error, report.lag.rows, report.lag.seconds);
  return report;
}

struct Flusher::Impl {
  mutable std::mutex mutex;
  FlushReport last;
  std::unique_ptr<PeriodicJob> job;
};

Flusher::Flusher(Config config, UtcClock now) : impl_(std::make_shared<Impl>()) {
  // The job owns what it uses (a copy of the config, the shared Impl): a job
  // left running at exit never reads freed memory.
  impl_->job = std::make_unique<PeriodicJob>(
      "flush",
      [config = std::move(config), now = std::move(now),
       impl = std::weak_ptr<Impl>(impl_)](std::stop_token stop) -> std::chrono::duration<double> {
        FlushReport report;
        try {
          report = flush_once(config, {}, stop, now);
        } catch (const std::exception& e) {
          report.archive_ok = false;
          report.error = e.what();
          logger("flush")->error("flush: {}", e.what());
        }
        if (auto shared = impl.lock()) {
          std::lock_guard lock(shared->mutex);
          shared->last = report;
        }
        if (report.archive_ok || report.cancelled)
          return std::chrono::duration<double>(config.archive.flush_interval_s);
        return std::chrono::duration<double>(
            std::min(config.archive.flush_interval_s, kFlushRetryS));
      });
}

Flusher::~Flusher() { stop(); }

void Flusher::start() { impl_->job->start(); }

void Flusher::request_stop() { impl_->job->request_stop(); }

void Flusher::stop() { impl_->job->stop(); }

FlushReport Flusher::last() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->last;
}

}  // namespace flexmon
