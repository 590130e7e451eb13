#include "storage/cache_writer.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "common/log.h"
#include "common/sqlite.h"
#include "wire.pb.h"

namespace flexmon {

namespace {

using Mono = std::chrono::steady_clock;

// The RESTART waits for PASSIVE rounds (at most kCatchUpRounds) to leave at
// most this many frames for it to copy while the writer waits.
constexpr int kRestartLeftoverFrames = 256;
constexpr int kCatchUpRounds = 8;
// How long a RESTART checkpoint waits for readers still using the WAL (the
// writer waits meanwhile); when they do not let go, the WAL grows until a
// later try.
constexpr int kWalRestartBusyMs = 10;

std::int64_t elapsed_ns(Mono::time_point since) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Mono::now() - since).count();
}

const CacheWriterTuning& checked(const CacheWriterTuning& tuning) {
  if (tuning.checkpoint_every_frames <= 0)
    throw std::invalid_argument("collector: checkpoint_every_frames must be at least 1");
  return tuning;
}

// The writer's lines keep the collector's logger and prefix: operators and
// tests read them as the collector's.
std::shared_ptr<spdlog::logger> writer_log() { return logger("collector"); }

}  // namespace

WriteBatch::Target& WriteBatch::target(const std::string& node, std::uint64_t boot_epoch) {
  WindowKey key{node, boot_epoch};
  auto t = touched_.find(key);
  if (t == touched_.end()) {
    auto committed = committed_.find(key);
    t = touched_
            .emplace(std::move(key),
                     Target{committed != committed_.end() ? committed->second : SeqWindow{}})
            .first;
    t->second.key = &t->first;
  }
  return t->second;
}

SeqWindow::Verdict WriteBatch::offer(Target& target, const wire::Result& result) {
  auto verdict = target.window.classify(result.seq());
  if (verdict != SeqWindow::Verdict::fresh) return verdict;
  target.window.add(result.seq());
  if (target.group == kNoGroup) {
    target.group = groups_.size();
    groups_.push_back(Cache::StoreGroup{target.key->first, target.key->second, {}});
  }
  groups_[target.group].results.push_back(&result);
  return verdict;
}

CacheWriter::CacheWriter(const std::filesystem::path& file, std::int64_t max_wal_bytes,
                         const CacheWriterTuning& tuning, CacheWriterCounters& counters)
    : tuning_(checked(tuning)),
      max_wal_bytes_(max_wal_bytes),
      counters_(counters),
      cache_(file, /*read_only=*/false, tuning_.utc_now),
      window_table_(cache_.database()) {
  auto& db = cache_.database();
  // NORMAL in WAL mode: COMMIT writes the WAL without waiting for the disk;
  // sync()'s fdatasync of the WAL makes it durable before any ack.
  db.exec("PRAGMA synchronous=NORMAL");
  // The indexes of `results` stay in memory while a batch is inserted.
  db.exec("PRAGMA cache_size=-65536");
  // Replaces SQLite's autocheckpoint on the writer's connection: the hook
  // only tells the checkpointer how large the WAL has grown.
  sqlite3_wal_hook(db.handle(), &CacheWriter::on_wal_commit, this);
  windows_ = window_table_.load();
  open_wal();
  checkpoint_db_ = std::make_unique<sqlite::Database>(file);
  sqlite3_busy_timeout(checkpoint_db_->handle(), kWalRestartBusyMs);
  auto page_size = checkpoint_db_->prepare("PRAGMA page_size");
  page_size.step();
  max_wal_frames_ = max_wal_bytes_ / page_size.int64(0);
  checkpointer_ = std::thread([this] { checkpoint_loop(); });
}

CacheWriter::~CacheWriter() {
  close();
  if (wal_fd_ >= 0) ::close(wal_fd_);
}

void CacheWriter::close() {
  {
    std::lock_guard lock(checkpoint_mutex_);
    checkpoint_stop_ = true;
    checkpoint_due_.notify_all();
  }
  if (checkpointer_.joinable()) checkpointer_.join();
}

// The cache's WAL file, for sync(). It exists while a connection to the
// cache is open (ours is, for the writer's whole life), and an fd keeps
// naming the same file when SQLite truncates or rewinds it.
void CacheWriter::open_wal() {
  const char* wal = sqlite3_filename_wal(sqlite3_db_filename(cache_.database().handle(), "main"));
  wal_fd_ = wal ? ::open(wal, O_RDWR | O_CLOEXEC) : -1;
  if (wal_fd_ < 0)
    throw std::runtime_error(fmt::format("collector: cannot open the cache's WAL file {}: {}",
                                         wal ? wal : "?", std::strerror(errno)));
  fill_wal(wal);
}

// Writes zeros from the end of the WAL file up to its bound plus a margin.
// While SQLite appends past the end of the file, the fdatasync behind every
// ack must also journal the file's new size and blocks (ext4), and while a
// fresh cache's WAL grew, acks waited up to ~100 ms (collector_bench); over
// written blocks only the frames themselves are synced. SQLite tells valid
// frames by their salts and checksums, never by the file's size, so what
// lies past the last frame is what a rewound WAL always has: stale bytes.
// Runs before the first commit, and never overwrites a byte of the file.
void CacheWriter::fill_wal(const std::string& wal) {
  if (!tuning_.fill_wal) return;
  auto log = writer_log();
  const std::int64_t size = max_wal_bytes_ + kWalFillMarginBytes;
  struct stat file {};
  if (::fstat(wal_fd_, &file) != 0)
    throw std::runtime_error(fmt::format("collector: cannot stat the cache's WAL file {}: {}", wal,
                                         std::strerror(errno)));
  if (file.st_size >= size) return;
  const auto started = Mono::now();
  log->info(
      "collector: writing the cache's WAL file {} full: {} MiB more, to {} MiB "
      "(collector.max_wal_mb + {})",
      wal, (size - file.st_size) >> 20, size >> 20, kWalFillMarginBytes >> 20);
  static const std::vector<char> zeros(1 << 20, 0);
  constexpr off_t kReportEvery = 1LL << 30;
  off_t next_report = file.st_size + kReportEvery;
  for (off_t at = file.st_size; at < size;) {
    auto length = std::min<off_t>(static_cast<off_t>(zeros.size()), size - at);
    ssize_t wrote = ::pwrite(wal_fd_, zeros.data(), static_cast<std::size_t>(length), at);
    if (wrote <= 0)
      throw std::runtime_error(
          fmt::format("collector: cannot extend the cache's WAL file {} to {} bytes: {} (a "
                      "smaller collector.max_wal_mb needs less disk)",
                      wal, size, std::strerror(errno)));
    at += wrote;
    if (at >= next_report) {
      log->info("collector: WAL file at {} MiB of {} MiB", at >> 20, size >> 20);
      next_report += kReportEvery;
    }
  }
  if (::fdatasync(wal_fd_) != 0)
    throw std::runtime_error(fmt::format("collector: cannot sync the cache's WAL file {}: {}", wal,
                                         std::strerror(errno)));
  log->info("collector: WAL file written full in {:.1f} s",
            std::chrono::duration<double>(Mono::now() - started).count());
}

Result<CommitOutcome> CacheWriter::commit(WriteBatch batch) {
  CommitOutcome done;
  if (!batch.empty()) {
    try {
      // Held for the commit: a RESTART checkpoint runs between two commits.
      std::lock_guard between_commits(commit_mutex_);
      auto began = Mono::now();
      done.outcomes = cache_.store_many(batch.groups_, [&](sqlite::Database&) {
        for (const auto& g : batch.groups_) {
          WindowKey key{g.node, g.boot_epoch};
          window_table_.save(key, batch.touched_.at(key).window);
        }
      });
      counters_.commit_time.record(elapsed_ns(began));
    } catch (const sqlite::UnwritableError& e) {
      return fail(ErrorCode::kUnavailable, e.what());
    } catch (const std::exception& e) {
      ++counters_.commit_failures;
      return fail(ErrorCode::kIoError, e.what());
    }
    ++counters_.commits;
    for (const auto& g : batch.groups_) {
      WindowKey key{g.node, g.boot_epoch};
      windows_.insert_or_assign(key, std::move(batch.touched_.at(key).window));
    }
    ++commits_done_;
    done.groups = std::move(batch.groups_);
  }
  done.sync_through = commits_done_;
  return done;
}

Status CacheWriter::sync(std::uint64_t commit_number) {
  if (commit_number <= synced_) return success();
  // Covers every commit that returned before this call, hence commit_number.
  auto began = Mono::now();
  int rc = ::fdatasync(wal_fd_);
  counters_.sync_time.record(elapsed_ns(began));
  if (rc != 0) {
    // Linux may drop the pages that failed to write and report success on
    // the next try: the caller must trust nothing written since.
    ++counters_.sync_failures;
    return fail(ErrorCode::kIoError, std::strerror(errno));
  }
  synced_ = commit_number;
  ++counters_.syncs;
  return success();
}

// SQLite's WAL hook on the writer's connection, after every commit: `frames`
// is the WAL's length in frames.
int CacheWriter::on_wal_commit(void* self, sqlite3*, const char*, int frames) {
  auto* writer = static_cast<CacheWriter*>(self);
  std::lock_guard lock(writer->checkpoint_mutex_);
  // Fewer frames than already checkpointed: the writer began the WAL anew.
  if (frames < writer->checkpointed_frames_) writer->checkpointed_frames_ = 0;
  writer->wal_frames_ = frames;
  if (frames - writer->checkpointed_frames_ >= writer->tuning_.checkpoint_every_frames)
    writer->checkpoint_due_.notify_one();
  return SQLITE_OK;
}

// PASSIVE checkpoints do not block the writer, but under a steady load they
// never catch up with it exactly, and SQLite begins the WAL anew only when a
// commit finds it wholly checkpointed. So once the WAL exceeds its bound the
// writer is held between two commits (commit_mutex_) for a RESTART
// checkpoint, which has only the frames since the last PASSIVE one left to
// copy.
void CacheWriter::checkpoint_loop() {
  RateLimitedLog failures(writer_log(), 20, std::chrono::seconds(10));
  sqlite3* db = checkpoint_db_->handle();
  for (;;) {
    {
      std::unique_lock lock(checkpoint_mutex_);
      checkpoint_due_.wait(lock, [&] {
        return checkpoint_stop_ ||
               wal_frames_ - checkpointed_frames_ >= tuning_.checkpoint_every_frames;
      });
      if (checkpoint_stop_) break;
    }
    int wal = 0, copied = 0;
    // A checkpoint writes the -shm too (a write to its mapping after the file
    // became unwritable is a SIGBUS, see sqlite::Database::unwritable): not
    // while the cache cannot be written; the writer commits nothing meanwhile
    // either.
    if (!checkpoint_db_->unwritable().empty()) {
      std::lock_guard lock(checkpoint_mutex_);
      checkpointed_frames_ = wal_frames_;
      continue;
    }
    int rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &wal, &copied);
    if (rc == SQLITE_OK) ++counters_.checkpoints;
    // Before holding the writer, more PASSIVE rounds while each still has
    // much to copy: what is left for the RESTART is then about one commit.
    for (int round = 0; rc == SQLITE_OK && wal > max_wal_frames_ &&
                        wal - copied > kRestartLeftoverFrames && round < kCatchUpRounds;
         ++round)
      rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &wal, &copied);
    if (rc == SQLITE_OK && wal > max_wal_frames_) {
      std::unique_lock between_commits(commit_mutex_);
      auto held_since = Mono::now();
      rc = checkpoint_db_->unwritable().empty()
               ? sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_RESTART, &wal, &copied)
               : SQLITE_BUSY;
      between_commits.unlock();
      auto held = static_cast<std::uint64_t>(elapsed_ns(held_since));
      counters_.wal_restart_hold_ns += held;
      if (held > counters_.wal_restart_hold_max_ns) counters_.wal_restart_hold_max_ns = held;
      if (rc == SQLITE_OK) {
        ++counters_.wal_restarts;
        // The writer's next commit begins the WAL anew.
        std::lock_guard lock(checkpoint_mutex_);
        wal_frames_ = checkpointed_frames_ = 0;
        continue;
      }
    }
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
      ++counters_.checkpoint_failures;
      failures.warn("collector: checkpoint of the cache's WAL failed: {}", sqlite3_errmsg(db));
    }
    std::lock_guard lock(checkpoint_mutex_);
    if (rc != SQLITE_OK)
      // Busy (readers, another connection's checkpoint) or failed: again
      // once the WAL has grown by another round.
      checkpointed_frames_ = wal_frames_;
    else if (copied <= wal_frames_)
      checkpointed_frames_ = copied;
    else
      checkpointed_frames_ = 0;  // the writer began the WAL anew meanwhile
  }
}

}  // namespace flexmon
