#include "storage/seq_window.h"

#include <algorithm>
#include <stdexcept>

#include "common/sqlite.h"

namespace flexmon {

namespace {

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS collector_window ("
    " node TEXT NOT NULL, boot_epoch INTEGER NOT NULL,"
    " high_water INTEGER NOT NULL, above BLOB NOT NULL,"
    " PRIMARY KEY (node, boot_epoch)) WITHOUT ROWID";

void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

bool get_varint(std::string_view& in, std::uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    auto byte = static_cast<std::uint8_t>(in.front());
    in.remove_prefix(1);
    v |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return true;
  }
  return false;
}

// The table exists before the upsert on it is prepared.
sqlite::Database& with_schema(sqlite::Database& db) {
  db.exec(kSchema);
  return db;
}

}  // namespace

SeqWindow::Verdict SeqWindow::classify(std::uint64_t seq) const {
  if (seq <= high_water_) return Verdict::duplicate;
  if (seq - high_water_ > kSeqWindow) return Verdict::outside;
  auto it = std::upper_bound(above_.begin(), above_.end(), seq,
                             [](std::uint64_t s, const auto& r) { return s < r.first; });
  if (it != above_.begin() && std::prev(it)->second >= seq) return Verdict::duplicate;
  return Verdict::fresh;
}

void SeqWindow::add(std::uint64_t seq) {
  auto it = std::upper_bound(above_.begin(), above_.end(), seq,
                             [](std::uint64_t s, const auto& r) { return s < r.first; });
  // Join the range before, the range after, or both; else a new range.
  bool joins_prev = it != above_.begin() && std::prev(it)->second + 1 == seq;
  bool joins_next = it != above_.end() && it->first == seq + 1;
  if (joins_prev && joins_next) {
    std::prev(it)->second = it->second;
    above_.erase(it);
  } else if (joins_prev) {
    std::prev(it)->second = seq;
  } else if (joins_next) {
    it->first = seq;
  } else {
    above_.insert(it, {seq, seq});
  }
  // Ranges that reach the high-water mark fold into it.
  while (!above_.empty() && above_.front().first == high_water_ + 1) {
    high_water_ = above_.front().second;
    above_.erase(above_.begin());
  }
}

std::string SeqWindow::encode_above() const {
  std::string out;
  std::uint64_t base = high_water_;
  for (const auto& [first, last] : above_) {
    put_varint(out, first - base);
    put_varint(out, last - first);
    base = last;
  }
  return out;
}

bool SeqWindow::decode(std::uint64_t high_water, std::string_view above, SeqWindow& out) {
  out = SeqWindow{};
  out.high_water_ = high_water;
  std::uint64_t base = high_water;
  while (!above.empty()) {
    std::uint64_t gap = 0, length = 0;
    if (!get_varint(above, gap) || !get_varint(above, length) || gap < 2) return false;
    std::uint64_t first = base + gap;
    if (first < base || first + length < first) return false;
    out.above_.emplace_back(first, first + length);
    base = first + length;
  }
  return true;
}

WindowTable::WindowTable(sqlite::Database& db)
    : db_(with_schema(db)),
      upsert_(db_.prepare(
          "INSERT INTO collector_window (node, boot_epoch, high_water, above) VALUES (?1, ?2, ?3, "
          "?4) ON CONFLICT (node, boot_epoch) DO UPDATE SET high_water = ?3, above = ?4")) {}

std::map<WindowKey, SeqWindow> WindowTable::load() {
  std::map<WindowKey, SeqWindow> windows;
  auto select = db_.prepare("SELECT node, boot_epoch, high_water, above FROM collector_window");
  while (select.step()) {
    SeqWindow w;
    if (!SeqWindow::decode(static_cast<std::uint64_t>(select.int64(2)), select.text(3), w))
      throw std::runtime_error("collector_window: a row the collector did not write (node '" +
                               select.text(0) + "')");
    windows.emplace(WindowKey{select.text(0), static_cast<std::uint64_t>(select.int64(1))},
                    std::move(w));
  }
  return windows;
}

void WindowTable::save(const WindowKey& key, const SeqWindow& window) {
  upsert_.bind(1, key.first)
      .bind(2, static_cast<std::int64_t>(key.second))
      .bind(3, static_cast<std::int64_t>(window.high_water()))
      .bind_blob(4, window.encode_above())
      .run();
}

}  // namespace flexmon
