#include "prober/spool.h"

#include "common/sqlite.h"

namespace flexmon::prober {

bool MemorySpool::put(SpoolKey key, std::string result) {
  if (entries_.size() >= capacity_) return false;
  entries_.insert_or_assign(key, std::move(result));
  return true;
}

std::size_t MemorySpool::erase(std::uint64_t epoch, std::uint64_t first, std::uint64_t last) {
  if (first > last) return 0;
  auto begin = entries_.lower_bound({epoch, first});
  auto end = entries_.upper_bound({epoch, last});
  std::size_t n = static_cast<std::size_t>(std::distance(begin, end));
  entries_.erase(begin, end);
  return n;
}

void MemorySpool::scan(SpoolKey from,
                       const std::function<bool(SpoolKey, const std::string&)>& visit) {
  for (auto it = entries_.lower_bound(from); it != entries_.end(); ++it)
    if (!visit(it->first, it->second)) return;
}

SqliteSpool::SqliteSpool(const std::filesystem::path& file, SqliteSpoolOptions options)
    : options_(options), db_(std::make_unique<sqlite::Database>(file)) {
  // FULL: COMMIT fsyncs the WAL, so what sync() returned from is on disk.
  db_->exec("PRAGMA synchronous=FULL");
  db_->exec(
      "CREATE TABLE IF NOT EXISTS spool (epoch INTEGER NOT NULL, seq INTEGER NOT NULL, "
      "result BLOB NOT NULL, PRIMARY KEY (epoch, seq)) WITHOUT ROWID;"
      "CREATE TABLE IF NOT EXISTS history (epoch INTEGER NOT NULL, seq INTEGER NOT NULL, "
      "PRIMARY KEY (epoch, seq)) WITHOUT ROWID");
  insert_ = std::make_unique<sqlite::Statement>(
      db_->prepare("INSERT OR REPLACE INTO spool (epoch, seq, result) VALUES (?1, ?2, ?3)"));
  record_ = std::make_unique<sqlite::Statement>(
      db_->prepare("INSERT OR IGNORE INTO history (epoch, seq) VALUES (?1, ?2)"));
  erase_ = std::make_unique<sqlite::Statement>(
      db_->prepare("DELETE FROM spool WHERE epoch = ?1 AND seq BETWEEN ?2 AND ?3"));
  scan_ = std::make_unique<sqlite::Statement>(
      db_->prepare("SELECT epoch, seq, result FROM spool WHERE (epoch, seq) >= (?1, ?2) "
                   "ORDER BY epoch, seq"));
  auto count = db_->prepare("SELECT count(*) FROM spool");
  count.step();
  size_ = static_cast<std::size_t>(count.int64(0));
}

SqliteSpool::~SqliteSpool() {
  try {
    sync();
  } catch (...) {
    // Unsynced puts were never sent; unsynced erases are acknowledged again.
  }
  scan_.reset();
  erase_.reset();
  record_.reset();
  insert_.reset();
}

void SqliteSpool::begin() {
  if (in_transaction_) return;
  db_->exec("BEGIN IMMEDIATE");
  in_transaction_ = true;
}

bool SqliteSpool::put(SpoolKey key, std::string result) {
  if (size_ >= options_.capacity) return false;
  begin();
  insert_->bind(1, static_cast<std::int64_t>(key.epoch))
      .bind(2, static_cast<std::int64_t>(key.seq))
      .bind_blob(3, result)
      .run();
  if (options_.history)
    record_->bind(1, static_cast<std::int64_t>(key.epoch))
        .bind(2, static_cast<std::int64_t>(key.seq))
        .run();
  ++size_;
  return true;
}

std::size_t SqliteSpool::erase(std::uint64_t epoch, std::uint64_t first, std::uint64_t last) {
  if (first > last) return 0;
  begin();
  erase_->bind(1, static_cast<std::int64_t>(epoch))
      .bind(2, static_cast<std::int64_t>(first))
      .bind(3, static_cast<std::int64_t>(last))
      .run();
  auto n = static_cast<std::size_t>(db_->changes());
  size_ -= std::min(n, size_);
  return n;
}

void SqliteSpool::sync() {
  if (!in_transaction_) return;
  db_->exec("COMMIT");
  in_transaction_ = false;
}

void SqliteSpool::scan(SpoolKey from,
                       const std::function<bool(SpoolKey, const std::string&)>& visit) {
  scan_->bind(1, static_cast<std::int64_t>(from.epoch))
      .bind(2, static_cast<std::int64_t>(from.seq));
  while (scan_->step()) {
    SpoolKey key{static_cast<std::uint64_t>(scan_->int64(0)),
                 static_cast<std::uint64_t>(scan_->int64(1))};
    if (!visit(key, scan_->text(2))) break;
  }
  scan_->reset();
}

SpoolKey SqliteSpool::last_key() {
  auto select = db_->prepare(
      "SELECT epoch, seq FROM (SELECT epoch, seq FROM spool UNION ALL "
      "SELECT epoch, seq FROM history) ORDER BY epoch DESC, seq DESC LIMIT 1");
  if (!select.step()) return {};
  return {static_cast<std::uint64_t>(select.int64(0)), static_cast<std::uint64_t>(select.int64(1))};
}

}  // namespace flexmon::prober
