#include "storage/reader.h"

#include <malloc.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "common/config.h"
#include "storage/archive.h"
#include "storage/summary.h"

namespace flexmon {

namespace {

using storage::Select;

auto order_key(const ResultRow& r) { return std::tie(r.start_ns, r.node, r.boot_epoch, r.seq); }

// Newest first: start_ns DESC, then the key ascending.
bool newer(const ResultRow& a, const ResultRow& b) {
  if (a.start_ns != b.start_ns) return a.start_ns > b.start_ns;
  return std::tie(a.node, a.boot_epoch, a.seq) < std::tie(b.node, b.boot_epoch, b.seq);
}

std::string hex(std::string_view bytes) {
  std::string out;
  for (unsigned char c : bytes) out += fmt::format("{:02x}", c);
  return out;
}

std::string encode_cursor(const ResultRow& r) {
  return hex(fmt::format("1:{}:{}:{}:{}", r.start_ns, r.boot_epoch, r.seq, r.node));
}

std::optional<Select::After> decode_cursor(const std::string& cursor) {
  if (cursor.size() % 2 || cursor.size() > 512) return std::nullopt;
  std::string text;
  for (std::size_t i = 0; i < cursor.size(); i += 2) {
    unsigned byte = 0;
    auto [end, ec] = std::from_chars(cursor.data() + i, cursor.data() + i + 2, byte, 16);
    if (ec != std::errc() || end != cursor.data() + i + 2) return std::nullopt;
    text.push_back(static_cast<char>(byte));
  }
  Select::After after;
  std::int64_t* numbers[] = {&after.start_ns, &after.boot_epoch, &after.seq};
  if (text.rfind("1:", 0) != 0) return std::nullopt;
  std::size_t at = 2;
  for (auto* number : numbers) {
    auto colon = text.find(':', at);
    if (colon == std::string::npos) return std::nullopt;
    auto [end, ec] = std::from_chars(text.data() + at, text.data() + colon, *number);
    if (ec != std::errc() || end != text.data() + colon) return std::nullopt;
    at = colon + 1;
  }
  after.node = text.substr(at);
  return after;
}

// Fills a row from a cursor over the Select's columns.
using ReadRow = void (*)(const storage::Cursor&, ResultRow&);

// One database's rows for a page, newest first by time alone, read one at a
// time so that a page stops reading a database as soon as the other one's
// rows are newer.
class NewestRows {
 public:
  NewestRows(std::unique_ptr<storage::Cursor> cursor, ReadRow read)
      : cursor_(std::move(cursor)), read_(read) {
    advance();
  }
  bool empty() const { return !has_row_; }
  const ResultRow& front() const { return row_; }
  // Whether every row of this database at `time` or newer has been taken,
  // for a query whose LIMIT is `limit`: the next row is older, or there is
  // none and the LIMIT did not cut the rows short.
  bool taken_down_to(UtcNs time, std::uint32_t limit) const {
    return has_row_ ? row_.start_ns < time : rows_read_ < limit;
  }
  // Moves the front row to the end of `rows` and reads the next one.
  void take_into(std::vector<ResultRow>& rows) {
    rows.push_back(std::move(row_));
    advance();
  }

 private:
  void advance() {
    has_row_ = cursor_->next();
    if (has_row_) {
      read_(*cursor_, row_);
      ++rows_read_;
    }
  }

  std::unique_ptr<storage::Cursor> cursor_;
  ReadRow read_;
  ResultRow row_;
  bool has_row_ = false;
  std::size_t rows_read_ = 0;
};

// The first *select.limit rows of `select` over both databases, newest first
// with ties in key order. Each database is asked to order by time only,
// which its (src, dst, start_ns) and start_ns indexes give without a sort (a
// full ORDER BY made SQLite copy every row through a temporary b-tree), and
// the two are merged by time as they are read: a page whose rows are all in
// the cache reads no more than one archived row, and the usual page, the
// cache's recent rows over older archived ones, reads limit rows in all
// rather than limit from each database. The rows that share the oldest time
// taken may have been cut anywhere by the limit, in either database, so they
// are read again, in key order, unless both databases' next rows are older
// (then the page holds all of them). `read` fills rows from select.columns.
template <typename OpenCache, typename OpenArchive>
std::vector<ResultRow> read_newest(const Select& select, ReadRow read, OpenCache&& open_cache,
                                   OpenArchive&& open_archive) {
  const std::uint32_t wanted = *select.limit;
  std::vector<ResultRow> rows;
  rows.reserve(wanted);
  bool oldest_time_complete = true;
  {
    // Closed before the ties are read: a StatementCache that is full drops
    // its statements, which must not be in use then.
    Select by_time = select;
    by_time.order = Select::Order::newest_by_time;
    NewestRows cache(open_cache(by_time), read), archive(open_archive(by_time), read);
    while (rows.size() < wanted && !(cache.empty() && archive.empty())) {
      const bool from_cache =
          archive.empty() || (!cache.empty() && cache.front().start_ns >= archive.front().start_ns);
      (from_cache ? cache : archive).take_into(rows);
    }
    if (rows.size() == wanted)
      oldest_time_complete = cache.taken_down_to(rows.back().start_ns, wanted) &&
                             archive.taken_down_to(rows.back().start_ns, wanted);
  }
  if (!oldest_time_complete) {
    const UtcNs oldest = rows.back().start_ns;
    while (!rows.empty() && rows.back().start_ns == oldest) rows.pop_back();
    const std::size_t newer_rows = rows.size();
    Select ties = select;
    ties.filter.from = oldest;
    ties.filter.to = oldest + 1;
    ties.limit = static_cast<std::uint32_t>(wanted - newer_rows);
    std::unique_ptr<storage::Cursor> tied_rows[] = {open_cache(ties), open_archive(ties)};
    for (auto& cursor : tied_rows)
      while (cursor->next()) read(*cursor, rows.emplace_back());
    auto tied = rows.begin() + static_cast<std::ptrdiff_t>(newer_rows);
    std::sort(tied, rows.end(), newer);
    if (rows.size() > wanted) rows.resize(wanted);
  }
  // Already in order unless rows share a time.
  if (!std::is_sorted(rows.begin(), rows.end(), newer)) std::sort(rows.begin(), rows.end(), newer);
  return rows;
}
}  // namespace

bool is_valid_cursor(const std::string& cursor) { return decode_cursor(cursor).has_value(); }

struct ResultReader::Impl {
  Config config;
  std::unique_ptr<sqlite::Database> cache;
  std::string uuid;
  std::unique_ptr<storage::Archive> archive;
  std::unique_ptr<storage::StatementCache> statements;  // of `cache`

  explicit Impl(const Config& c) : config(c) {
    cache = storage::open_cache_db(config.collector.cache_db);
    uuid = storage::cache_uuid(*cache);
    statements = std::make_unique<storage::StatementCache>(*cache);
  }

  Select base(const ResultFilter& filter) const {
    Select select;
    select.filter = filter;
    if (filter.site)
      for (const auto& node : config.nodes)
        if (node.site == *filter.site) select.site_nodes.push_back(node.id);
    return select;
  }

  // Runs `read(snapshot, watermark)` inside a read snapshot of the cache
  // (taken first) and one of the archive.
  // A read may write the cache's -shm too (SQLite records there which WAL
  // frame each reader's snapshot ends at), and a write to that mapping once
  // the file cannot be written is a SIGBUS (sqlite::Database::unwritable):
  // so no snapshot starts while it cannot. Nothing is lost; ask again later.
  template <typename Read>
  Status with_snapshot(Read&& read) {
    if (std::string why = cache->unwritable(); !why.empty())
      return fail(
          ErrorCode::kUnavailable,
          fmt::format("the cache cannot be read while its files cannot be written: {}", why));
    statements->run("BEGIN");
    struct End {
      storage::StatementCache& statements;
      ~End() {
        try {
          statements.run("ROLLBACK");
        } catch (const sqlite::SqliteError&) {
        }
      }
    } end{*statements};
    storage::SqliteCursor start(statements->get("SELECT COUNT(*) FROM cache_meta"), {});
    start.next();  // the cache's snapshot starts here
    try {
      if (!archive) archive = storage::Archive::open(config);
      auto snapshot = archive->snapshot(uuid);
      read(*snapshot, snapshot->watermark());
    } catch (const storage::ArchiveError& e) {
      archive.reset();
      return fail(ErrorCode::kUnavailable, fmt::format("archive unreachable: {}", e.what()));
    }
    return success();
  }

  // The newest row of each path: the paths' newest times first (both
  // databases, GROUP BY), then one indexed point read per path and database.
  Result<ResultPage> latest(const PageQuery& query) {
    Select newest = base(query.filter);
    newest.columns = "tool, src, dst, MAX(start_ns)";
    newest.group_by_path = true;
    ResultPage page;
    Status status = with_snapshot([&](storage::ArchiveSnapshot& archive, std::int64_t w) {
      Select from_cache = newest;
      from_cache.above_id = w;
      std::map<std::tuple<std::string, std::string, std::string>, UtcNs> paths;
      {
        auto cache_rows = cache_select(from_cache);
        auto archive_rows = archive.select(newest);
        for (storage::Cursor* c : {cache_rows.get(), archive_rows.get()})
          while (c->next()) {
            auto [it, added] = paths.try_emplace({c->text(0), c->text(1), c->text(2)}, c->int64(3));
            if (!added) it->second = std::max(it->second, c->int64(3));
          }
      }
      for (const auto& [path, last_ns] : paths) {
        Select point = base(query.filter);
        // A tool this version does not know (the filter then had none) has
        // no point read: its rows are not results the manager serves.
        point.filter.tool = parse_tool(std::get<0>(path));
        if (!point.filter.tool) continue;
        std::tie(std::ignore, point.filter.src, point.filter.dst) = path;
        point.filter.from = last_ns;
        point.filter.to = last_ns + 1;
        point.order = Select::Order::newest_first;
        point.limit = 1;
        Select point_cache = point;
        point_cache.above_id = w;
        ResultRow row;
        bool found = false;
        std::unique_ptr<storage::Cursor> cursors[] = {cache_select(point_cache),
                                                      archive.select(point)};
        for (auto& cursor : cursors)
          if (cursor->next()) {
            ResultRow candidate;
            storage::read_row(*cursor, candidate);
            if (!found || newer(candidate, row)) row = std::move(candidate);
            found = true;
          }
        if (found) page.rows.push_back(std::move(row));
      }
    });
    if (!status) return status.error();
    std::sort(page.rows.begin(), page.rows.end(), newer);
    if (page.rows.size() > query.limit) page.rows.resize(query.limit);
    return page;
  }

  std::unique_ptr<storage::Cursor> cache_select(const Select& select) {
    std::vector<storage::Param> params;
    std::string sql = storage::render(select, storage::Dialect::sqlite, params);
    return std::make_unique<storage::SqliteCursor>(statements->get(sql), params);
  }
};

ResultReader::ResultReader(const Config& config) : impl_(std::make_unique<Impl>(config)) {}

ResultReader::~ResultReader() = default;

Result<ResultPage> ResultReader::results(const PageQuery& query, const HeldRow& held) {
  if (query.limit < 1 || query.limit > 10000)
    return fail(ErrorCode::kInvalidInput, "limit must be 1 to 10000");
  if (query.latest_per_path) {
    if (!query.cursor.empty())
      return fail(ErrorCode::kInvalidInput, "a cursor cannot go with latest_per_path");
    return impl_->latest(query);
  }
  Select select = impl_->base(query.filter);
  if (!query.cursor.empty()) {
    auto after = decode_cursor(query.cursor);
    if (!after)
      return fail(ErrorCode::kInvalidInput, "cursor is not one that a previous page returned");
    select.after = *after;
  }
  select.order = Select::Order::newest_first;
  select.limit = query.limit + 1;
  ResultPage page;
  std::vector<ResultRow> rows;
  Status status = impl_->with_snapshot([&](storage::ArchiveSnapshot& archive, std::int64_t w) {
    auto open_cache = [&](Select s) {
      s.above_id = w;
      return impl_->cache_select(s);
    };
    auto open_archive = [&](const Select& s) { return archive.select(s); };
    if (held) {
      Select keys = select;
      keys.columns = storage::kKeyColumns;
      rows = read_newest(keys, storage::read_key, open_cache, open_archive);
      const auto shown = rows.begin() + static_cast<std::ptrdiff_t>(
                                            std::min<std::size_t>(rows.size(), query.limit));
      if (std::all_of(rows.begin(), shown, held)) {
        page.keys_only = true;
        return;
      }
    }
    rows = read_newest(select, storage::read_row, open_cache, open_archive);
  });
  if (!status) return status.error();
  if (rows.size() > query.limit) {
    rows.resize(query.limit);
    page.next_cursor = encode_cursor(rows.back());
  }
  page.rows = std::move(rows);
  return page;
}

Result<std::vector<PathSummary>> ResultReader::summary(const ResultFilter& filter) {
  Select select = impl_->base(filter);
  select.columns = storage::kSummaryColumns;
  std::map<std::tuple<std::string, std::string, std::string>, storage::SummaryAccumulator> paths;
  Status status = impl_->with_snapshot([&](storage::ArchiveSnapshot& archive, std::int64_t w) {
    Select from_cache = select;
    from_cache.above_id = w;
    auto cache_rows = impl_->cache_select(from_cache);
    auto archive_rows = archive.select(select);
    for (storage::Cursor* cursor : {cache_rows.get(), archive_rows.get()})
      while (cursor->next())
        paths[{cursor->text(0), cursor->text(1), cursor->text(2)}].add(*cursor);
  });
  if (!status) return status.error();
  std::vector<PathSummary> out;
  for (auto& [key, accumulator] : paths) {
    PathSummary s = accumulator.finish();
    std::tie(s.tool, s.src, s.dst) = key;
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::vector<PathInfo>> ResultReader::paths(const ResultFilter& filter) {
  Select select = impl_->base(filter);
  select.columns = "tool, src, dst, COUNT(*), MIN(start_ns), MAX(start_ns)";
  select.group_by_path = true;
  std::map<std::tuple<std::string, std::string, std::string>, PathInfo> paths;
  Status status = impl_->with_snapshot([&](storage::ArchiveSnapshot& archive, std::int64_t w) {
    Select from_cache = select;
    from_cache.above_id = w;
    auto cache_rows = impl_->cache_select(from_cache);
    auto archive_rows = archive.select(select);
    for (storage::Cursor* c : {cache_rows.get(), archive_rows.get()})
      while (c->next()) {
        auto& info = paths[{c->text(0), c->text(1), c->text(2)}];
        if (info.count == 0) {
          info.first_ns = c->int64(4);
          info.last_ns = c->int64(5);
        }
        info.count += c->int64(3);
        info.first_ns = std::min(info.first_ns, c->int64(4));
        info.last_ns = std::max(info.last_ns, c->int64(5));
      }
  });
  if (!status) return status.error();
  std::vector<PathInfo> out;
  for (auto& [key, info] : paths) {
    std::tie(info.tool, info.src, info.dst) = key;
    out.push_back(std::move(info));
  }
  return out;
}

Status ResultReader::scan(const ResultFilter& filter,
                          const std::function<bool(const ResultRow&)>& visit) {
  Select select = impl_->base(filter);
  select.order = Select::Order::oldest_first;
  return impl_->with_snapshot([&](storage::ArchiveSnapshot& archive, std::int64_t w) {
    Select from_cache = select;
    from_cache.above_id = w;
    auto a = impl_->cache_select(from_cache);
    auto b = archive.select(select);
    ResultRow ra, rb;
    bool has_a = a->next(), has_b = b->next();
    if (has_a) storage::read_row(*a, ra);
    if (has_b) storage::read_row(*b, rb);
    while (has_a || has_b) {
      bool take_a = has_a && (!has_b || order_key(ra) < order_key(rb));
      if (!visit(take_a ? ra : rb)) return;
      if (take_a) {
        if ((has_a = a->next())) storage::read_row(*a, ra);
      } else if ((has_b = b->next())) {
        storage::read_row(*b, rb);
      }
    }
  });
}

Result<std::vector<PathBytesSent>> largest_bytes_sent(const std::filesystem::path& cache_db,
                                                      UtcNs since) {
  std::vector<PathBytesSent> paths;
  std::error_code ec;
  if (!std::filesystem::exists(cache_db, ec)) return paths;
  try {
    sqlite::Database db(cache_db, /*read_only=*/true);
    auto select = db.prepare(
        "SELECT tool, src, dst, MAX(bytes_sent) FROM results "
        "WHERE tool IN ('abw', 'throughput') AND start_ns >= ? AND bytes_sent IS NOT NULL "
        "GROUP BY tool, src, dst");
    select.bind(1, static_cast<std::int64_t>(since));
    while (select.step())
      paths.push_back(
          {*parse_tool(select.text(0)), select.text(1), select.text(2), select.int64(3)});
  } catch (const std::exception& e) {
    return fail(ErrorCode::kIoError, e.what());
  }
  return paths;
}

// glibc serves blocks above M_MMAP_THRESHOLD from fresh mappings and gives
// the top of the heap back to the kernel once more than M_TRIM_THRESHOLD of
// it is free. Both limits adapt, but they settle below what a page of results
// holds (a 10,000-row page: ~5 MB of libpq result and ~5 MB of rows), so every
// page faulted its memory in again from the kernel: 33 of the reader's 39 ms
// of CPU for a one-path week (bench/storage_bench query). Fixed limits keep up
// to kKeptFreeBytes of freed memory for the next page.
void keep_freed_memory_for_result_pages() {
  constexpr int kLargestHeapBlock = 32 << 20;  // glibc's ceiling for M_MMAP_THRESHOLD
  constexpr int kKeptFreeBytes = 32 << 20;
  mallopt(M_MMAP_THRESHOLD, kLargestHeapBlock);
  mallopt(M_TRIM_THRESHOLD, kKeptFreeBytes);
}

}  // namespace flexmon
