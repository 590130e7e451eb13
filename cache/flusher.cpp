#include "cache/flusher.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "cache/storage.h"
#include "common/config.h"
#include "common/log.h"

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

FlushLag lag_of(sqlite::Database& cache) {
  FlushLag lag;
  lag.archived_id = archived_id(cache);
  auto select = cache.prepare("SELECT COUNT(*), MIN(committed_ns) FROM results WHERE id > ?1");
  select.bind(1, lag.archived_id);
  select.step();
  lag.rows = select.int64(0);
  if (!select.is_null(1))
    lag.seconds = std::max(0.0, static_cast<double>(utc_now_ns() - select.int64(1)) / kNsPerS);
  return lag;
}

// Deletes, in short transactions (the collector writes meanwhile), archived
// rows that started before the retention.
std::int64_t apply_retention(sqlite::Database& cache, double retention_s) {
  std::int64_t upto = archived_id(cache);
  UtcNs before = utc_now_ns() - static_cast<std::int64_t>(retention_s * kNsPerS);
  auto remove = cache.prepare(
      "DELETE FROM results WHERE id IN (SELECT id FROM results WHERE id <= ?1 AND start_ns < ?2 "
      "LIMIT 10000)");
  std::int64_t deleted = 0;
  for (;;) {
    sqlite::Transaction transaction(cache);
    remove.bind(1, upto).bind(2, before).run();
    int changed = cache.changes();
    transaction.commit();
    deleted += changed;
    if (changed == 0) break;
  }
  return deleted;
}

}  // namespace

FlushLag flush_lag(const Config& config) {
  auto cache = storage::open_cache_db(config.collector.cache_db);
  return lag_of(*cache);
}

FlushReport flush_once(const Config& config, const FlushHook& hook) {
  auto log = logger("flush");
  FlushReport report;
  auto cache = storage::open_cache_db(config.collector.cache_db);
  std::string uuid = storage::cache_uuid(*cache);
  try {
    auto archive = storage::Archive::open(config);
    // The archive is the truth; the cache's mark only catches up with it.
    std::int64_t lower = archive->watermark(uuid);
    mark_archived(*cache, lower);

    UtcNs cutoff = utc_now_ns() - static_cast<std::int64_t>(config.archive.horizon_s * kNsPerS);
    // Ids grow in commit order (one writer, AUTOINCREMENT): every id up to
    // the newest row committed before the cutoff is committed.
    auto newest = cache->prepare(
        "SELECT id FROM results WHERE committed_ns <= ?1 ORDER BY committed_ns DESC, id DESC "
        "LIMIT 1");
    newest.bind(1, cutoff);
    std::int64_t upper = newest.step() ? newest.int64(0) : 0;
    newest.reset();

    while (lower < upper) {
      std::int64_t batch_upper =
          std::min<std::int64_t>(upper, lower + config.archive.flush_batch_rows);
      report.rows += archive->append(*cache, uuid, batch_upper, hook);
      if (hook) hook("after_archive_commit");
      mark_archived(*cache, batch_upper);
      if (hook) hook("after_cache_mark");
      lower = batch_upper;
    }
  } catch (const storage::ArchiveError& e) {
    report.archive_ok = false;
    report.error = e.what();
  }
  report.deleted = apply_retention(*cache, config.archive.retention_s);
  if (hook) hook("after_retention");
  report.lag = lag_of(*cache);
  if (report.archive_ok)
    log->info("flush: {} rows archived, {} deleted from the cache; behind by {} rows, {:.0f} s",
              report.rows, report.deleted, report.lag.rows, report.lag.seconds);
  else
    log->warn("flush: archive unavailable ({}); the cache keeps {} rows, {:.0f} s behind",
              report.error, report.lag.rows, report.lag.seconds);
  return report;
}

struct Flusher::Impl {
  const Config& config;
  mutable std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  FlushReport last;
  std::thread thread;

  explicit Impl(const Config& c) : config(c) {}

  void run() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      lock.unlock();
      FlushReport report;
      try {
        report = flush_once(config);
      } catch (const std::exception& e) {
        report.archive_ok = false;
        report.error = e.what();
        logger("flush")->error("flush: {}", e.what());
      }
      lock.lock();
      last = report;
      wake.wait_for(lock, std::chrono::duration<double>(config.archive.flush_interval_s),
                    [&] { return stopping; });
    }
  }
};

Flusher::Flusher(const Config& config) : impl_(std::make_unique<Impl>(config)) {}

Flusher::~Flusher() { stop(); }

void Flusher::start() {
  if (impl_->thread.joinable()) return;
  impl_->stopping = false;
  impl_->thread = std::thread([this] { impl_->run(); });
}

void Flusher::stop() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

FlushReport Flusher::last() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->last;
}

}  // namespace flexmon
