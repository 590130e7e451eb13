// CacheWriter: the cache's one writer and the owner of its durability
// contract. It classifies results against the dedupe window
// (storage/seq_window.h), commits the fresh ones with their windows in one
// transaction (group commit, synchronous=NORMAL: COMMIT writes the WAL
// without waiting for the disk), and makes commits durable with sync(), an
// fdatasync of the WAL file: a result may be acknowledged once sync() covered
// the commit that stored it (or, for a duplicate, the commits before it).
// WAL policy, all here: the WAL file is written full at start up to its bound
// (fill_wal), SQLite's autocheckpoint is replaced by a WAL hook that wakes a
// checkpointer thread on a connection of its own (PASSIVE every
// checkpoint_every_frames frames), and once the WAL exceeds its bound the
// writer is held between two commits for a RESTART checkpoint.
//
// Threads: begin()/commit() from one thread (the collector's writer), sync()
// from one other (its syncer); the checkpointer is the writer's own.
//
// Two dedupe mechanisms, on purpose:
// - the window decides what is acknowledged: a duplicate is recognised before
//   any transaction (a batch of duplicates writes nothing), still after
//   retention deleted its row (without the window a resent, already flushed
//   and trimmed result would be stored and flushed again), and a seq too far
//   ahead is answered `outside` (dropped, not acknowledged), which bounds
//   what a prober can make the collector remember;
// - UNIQUE (node, boot_epoch, seq) with INSERT OR IGNORE (Cache::store_many)
//   is the table's own guarantee for every writer, and the index is the
//   reader's key anyway: rows the window does not know (a cache written before
//   the window existed) are counted as duplicates and acknowledged instead of
//   failing the whole all-or-nothing batch, which its probers would resend
//   for ever.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/histogram.h"
#include "common/result.h"
#include "common/status.h"
#include "storage/cache.h"
#include "storage/seq_window.h"

namespace flexmon {

namespace sqlite {
class Database;
}

// What the writer did since start; the collector's counters extend them.
struct CacheWriterCounters {
  std::atomic<std::uint64_t> commits{0};  // transactions
  std::atomic<std::uint64_t> commit_failures{0};
  std::atomic<std::uint64_t> syncs{0};  // fdatasyncs of the cache's WAL before acks
  std::atomic<std::uint64_t> sync_failures{0};
  std::atomic<std::uint64_t> checkpoints{0};   // PASSIVE, by the checkpointer thread
  std::atomic<std::uint64_t> wal_restarts{0};  // RESTART: the WAL grew past its bound
  std::atomic<std::uint64_t> checkpoint_failures{0};
  // How long RESTART checkpoints held the writer between two commits, in
  // all and at most (ns of wall time).
  std::atomic<std::uint64_t> wal_restart_hold_ns{0};
  std::atomic<std::uint64_t> wal_restart_hold_max_ns{0};
  // Wall time of each commit (the transaction, under the commit lock) and
  // of each fdatasync of the WAL, in ns.
  Histogram commit_time;
  Histogram sync_time;
};

// The WAL policy's knobs. The defaults are what flexmon-collector runs with;
// tests make them small.
struct CacheWriterTuning {
  // The checkpointer thread runs a PASSIVE checkpoint whenever the WAL has
  // grown by this many frames (pages) since the last one (SQLite's default).
  int checkpoint_every_frames = 1000;
  // At start, the WAL file is written full with zeros up to the WAL bound
  // plus kWalFillMarginBytes, so that commits write over allocated blocks
  // instead of growing the file (CacheWriter::fill_wal). A test that reads
  // the WAL file's size to see how far it grew turns it off.
  bool fill_wal = true;
  // Labels each commit's rows (committed_ns); tests may step it.
  UtcClock utc_now = utc_now_ns;
};

// Room past the WAL bound in the filled WAL file, for the commits that land
// while a RESTART waits for its turn.
constexpr std::int64_t kWalFillMarginBytes = 16LL << 20;

// One group commit being put together: the results to store, by (node, boot
// epoch), and their windows as they will be once it commits.
class WriteBatch {
 public:
  // The results of one (node, boot epoch) in this batch; look it up once
  // per datagram, then offer() each of its results.
  struct Target {
    SeqWindow window;                // as committed, plus this batch's fresh seqs
    std::size_t group = kNoGroup;    // index in groups(), once a result is fresh
    const WindowKey* key = nullptr;  // its key in the batch
  };
  static constexpr std::size_t kNoGroup = static_cast<std::size_t>(-1);

  Target& target(const std::string& node, std::uint64_t boot_epoch);
  // Classifies `result` against its target's window; a fresh one joins the
  // batch (and its window). `result` must outlive the commit.
  SeqWindow::Verdict offer(Target& target, const wire::Result& result);

  bool empty() const { return groups_.empty(); }
  // The fresh results, by (node, boot epoch), in the order they were offered.
  const std::vector<Cache::StoreGroup>& groups() const { return groups_; }

 private:
  friend class CacheWriter;
  explicit WriteBatch(const std::map<WindowKey, SeqWindow>& committed) : committed_(committed) {}

  const std::map<WindowKey, SeqWindow>& committed_;
  std::map<WindowKey, Target> touched_;
  std::vector<Cache::StoreGroup> groups_;
};

// What commit() did: the batch's groups with one StoreOutcome each, in
// order, and the number of the last commit so far, which sync() must cover
// before the batch's results (fresh and duplicate) may be acknowledged.
struct CommitOutcome {
  std::vector<Cache::StoreGroup> groups;
  std::vector<StoreOutcome> outcomes;
  std::uint64_t sync_through = 0;
};

class CacheWriter {
 public:
  // Opens the cache for writing, loads the windows, opens and fills the WAL
  // file and starts the checkpointer. `max_wal_bytes` is the WAL's bound
  // (config.collector.max_wal_mb). Throws on a start-up failure.
  CacheWriter(const std::filesystem::path& file, std::int64_t max_wal_bytes,
              const CacheWriterTuning& tuning, CacheWriterCounters& counters);
  ~CacheWriter();
  CacheWriter(const CacheWriter&) = delete;
  CacheWriter& operator=(const CacheWriter&) = delete;

  // A batch against the windows as committed.
  WriteBatch begin() const { return WriteBatch(windows_); }
  // Stores the batch's fresh results with their windows in one transaction
  // (none when the batch is empty); all or nothing. Errors:
  // ErrorCode::kUnavailable when the cache's files cannot be written (nothing
  // was tried: sqlite::Transaction's check), kIoError when the commit failed.
  Result<CommitOutcome> commit(WriteBatch batch);
  // Makes every commit up to `commit_number` durable (fdatasync of the WAL),
  // unless an earlier sync covered it. An error is kIoError: nothing written
  // since can be trusted to be on disk. The syncer's alone.
  Status sync(std::uint64_t commit_number);
  // Ends the checkpointer (after the last commit); the destructor does too.
  void close();

 private:
  static int on_wal_commit(void* self, struct sqlite3*, const char*, int frames);
  void open_wal();
  void fill_wal(const std::string& wal);
  void checkpoint_loop();

  const CacheWriterTuning tuning_;
  const std::int64_t max_wal_bytes_;
  CacheWriterCounters& counters_;
  Cache cache_;  // the write connection
  WindowTable window_table_;
  std::map<WindowKey, SeqWindow> windows_;  // as committed; the committing thread's
  std::uint64_t commits_done_ = 0;          // the committing thread's
  std::uint64_t synced_ = 0;                // every commit up to this one is on disk; sync()'s
  int wal_fd_ = -1;

  std::mutex commit_mutex_;  // held by each commit and by the RESTART checkpoint

  std::unique_ptr<sqlite::Database> checkpoint_db_;  // the checkpointer's connection
  std::int64_t max_wal_frames_ = 0;                  // max_wal_bytes_ in frames
  std::mutex checkpoint_mutex_;                      // WAL hook -> checkpointer
  std::condition_variable checkpoint_due_;
  int wal_frames_ = 0;           // after the last commit
  int checkpointed_frames_ = 0;  // of those, copied to the database file
  bool checkpoint_stop_ = false;
  std::thread checkpointer_;
};

}  // namespace flexmon
