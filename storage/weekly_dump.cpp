#include "storage/weekly_dump.h"

#include <openssl/evp.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/log.h"
#include "common/tool.h"
#include "storage/archive.h"
#include "storage/periodic_job.h"
#include "storage/reader.h"
#include "storage/summary.h"

namespace flexmon {

namespace {

using namespace std::chrono;

struct EvpDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// A file written through SHA-256 (and gzip when asked); throws
// std::runtime_error naming the file on a write error.
class OutFile {
 public:
  OutFile(std::filesystem::path path, bool gzip) : path_(std::move(path)), gzip_(gzip) {
    file_.reset(std::fopen(path_.c_str(), "wb"));
    if (!file_) throw std::runtime_error(fmt::format("cannot write {}", path_.string()));
    sha_.reset(EVP_MD_CTX_new());
    EVP_DigestInit_ex(sha_.get(), EVP_sha256(), nullptr);
    if (gzip_) {
      // windowBits 15 + 16: gzip; the header carries no time and no name, so
      // the same rows always compress to the same bytes.
      if (deflateInit2(&z_, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        throw std::runtime_error("zlib: deflateInit2 failed");
      header_.time = 0;
      header_.os = 3;  // Unix
      deflateSetHeader(&z_, &header_);
    }
  }
  ~OutFile() {
    if (gzip_) deflateEnd(&z_);
  }

  void write(std::string_view data) {
    if (!gzip_) return raw(data);
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z_.avail_in = static_cast<uInt>(data.size());
    pump(Z_NO_FLUSH);
  }

  DumpFile finish(std::string name, std::int64_t rows) {
    if (gzip_) pump(Z_FINISH);
    if (std::fflush(file_.get()) != 0 || std::ferror(file_.get()))
      throw std::runtime_error(fmt::format("cannot write {}", path_.string()));
    file_.reset();
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_DigestFinal_ex(sha_.get(), digest, &size);
    DumpFile out{std::move(name), rows, bytes_, ""};
    for (unsigned i = 0; i < size; ++i) out.sha256 += fmt::format("{:02x}", digest[i]);
    return out;
  }

 private:
  void raw(std::string_view data) {
    if (data.empty()) return;
    if (std::fwrite(data.data(), 1, data.size(), file_.get()) != data.size())
      throw std::runtime_error(fmt::format("cannot write {}", path_.string()));
    EVP_DigestUpdate(sha_.get(), data.data(), data.size());
    bytes_ += static_cast<std::int64_t>(data.size());
  }
  void pump(int flush) {
    char buffer[1 << 16];
    int rc = Z_OK;
    do {
      z_.next_out = reinterpret_cast<Bytef*>(buffer);
      z_.avail_out = sizeof buffer;
      rc = deflate(&z_, flush);
      raw(std::string_view(buffer, sizeof buffer - z_.avail_out));
    } while (z_.avail_out == 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
  }

  std::filesystem::path path_;
  bool gzip_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  std::unique_ptr<EVP_MD_CTX, EvpDeleter> sha_;
  z_stream z_{};
  gz_header header_{};
  std::int64_t bytes_ = 0;
};

void csv_field(std::string& out, std::string_view text) {
  if (text.find_first_of(",\"\n\r") == std::string_view::npos) {
    out += text;
    return;
  }
  out += '"';
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

template <typename T>
void csv_opt(std::string& out, const std::optional<T>& value) {
  if (!value) return;
  if constexpr (std::is_same_v<T, std::string>)
    csv_field(out, *value);
  else
    out += fmt::format("{}", *value);
}

const char* kCommonHeader = "node,boot_epoch,seq,stream,src,dst,start_ns,start_time,status,error";

// The columns after the common ones: the tool's, every tool's for a row of
// a tool this version does not know (its file is "other").
std::string tool_header(std::optional<Tool> tool) {
  if (tool == Tool::kLatency)
    return ",sent,received,duplicates,rtt_min_ns,rtt_avg_ns,rtt_median_ns,rtt_max_ns,"
           "rtt_stddev_ns,rtts_ns";
  if (tool == Tool::kAbw) return ",estimate_bps,lower_bps,upper_bps,bytes_sent,duration_ns";
  if (tool == Tool::kThroughput) return ",throughput_bps,bytes_sent,duration_ns";
  return ",sent,received,duplicates,rtt_min_ns,rtt_avg_ns,rtt_median_ns,rtt_max_ns,"
         "rtt_stddev_ns,rtts_ns,estimate_bps,lower_bps,upper_bps,bytes_sent,duration_ns,"
         "throughput_bps";
}

void csv_row(std::string& out, const ResultRow& r) {
  csv_field(out, r.node);
  out += fmt::format(",{},{},", r.boot_epoch, r.seq);
  csv_field(out, r.stream);
  out += ',';
  csv_field(out, r.src);
  out += ',';
  csv_field(out, r.dst);
  out += fmt::format(",{},{},", r.start_ns, format_utc(r.start_ns));
  csv_field(out, r.status);
  out += ',';
  csv_opt(out, r.error);
  auto add = [&](const auto& value) {
    out += ',';
    csv_opt(out, value);
  };
  const std::optional<Tool> tool = parse_tool(r.tool);
  bool latency = tool == Tool::kLatency, abw = tool == Tool::kAbw, tp = tool == Tool::kThroughput;
  bool other = !tool;
  if (latency || other) {
    add(r.sent), add(r.received), add(r.duplicates), add(r.rtt_min_ns), add(r.rtt_avg_ns);
    add(r.rtt_median_ns), add(r.rtt_max_ns), add(r.rtt_stddev_ns);
    out += ',';
    if (r.rtts) csv_field(out, r.rtts->stored());
  }
  if (abw || other) {
    add(r.estimate_bps), add(r.lower_bps), add(r.upper_bps), add(r.bytes_sent);
    add(r.duration_ns);
  }
  if (tp) add(r.throughput_bps), add(r.bytes_sent), add(r.duration_ns);
  if (other) add(r.throughput_bps);
  out += '\n';
}

struct ToolFile {
  std::unique_ptr<OutFile> file;
  std::string buffer;
  std::int64_t rows = 0;
  UtcNs first = 0, last = 0;
};

}  // namespace

Result<UtcNs> parse_iso_week(const std::string& text) {
  int y = 0, w = 0;
  char tail = 0;
  if (text.size() != 8 || std::sscanf(text.c_str(), "%4d-W%2d%c", &y, &w, &tail) != 2 ||
      text[4] != '-' || text[5] != 'W')
    return fail(ErrorCode::kInvalidInput,
                fmt::format("week '{}': expected YYYY-Www, e.g. 2026-W07", text));
  // Week 1 holds January 4th; weeks start on Monday.
  sys_days jan4 = year{y} / January / 4;
  sys_days monday1 = jan4 - (weekday{jan4} - Monday);
  sys_days next_jan4 = year{y + 1} / January / 4;
  sys_days next_monday1 = next_jan4 - (weekday{next_jan4} - Monday);
  int weeks = static_cast<int>((next_monday1 - monday1).count() / 7);
  if (w < 1 || w > weeks)
    return fail(ErrorCode::kInvalidInput,
                fmt::format("week '{}': {} has weeks 1 to {}", text, y, weeks));
  sys_days start = monday1 + days{7 * (w - 1)};
  return static_cast<UtcNs>(duration_cast<nanoseconds>(start.time_since_epoch()).count());
}

std::string iso_week_of(UtcNs t) {
  UtcNs monday = storage::week_start(t);
  sys_days day{floor<days>(nanoseconds(monday))};
  sys_days thursday = day + days{3};  // the ISO year is the Thursday's
  year_month_day ymd{thursday};
  int y = static_cast<int>(ymd.year());
  auto start = parse_iso_week(fmt::format("{}-W01", y));
  int week = static_cast<int>((monday - *start) / storage::kWeekNs) + 1;
  return fmt::format("{}-W{:02}", y, week);
}

Result<DumpReport> dump_week(const Config& config, const std::string& week,
                             const std::filesystem::path& out,
                             const std::function<void(std::int64_t)>& progress,
                             std::stop_token stop) {
  auto start = parse_iso_week(week);
  if (!start) return start.error();
  DumpReport report;
  report.dir = out / week;
  try {
    std::filesystem::create_directories(report.dir);
    ResultReader reader(config);
    std::map<std::string, ToolFile> tools;
    std::map<std::tuple<std::string, std::string, std::string>, storage::SummaryAccumulator> paths;
    auto open_tool = [&](const std::string& tool) -> ToolFile& {
      auto [it, added] = tools.try_emplace(tool);
      if (added) {
        it->second.file =
            std::make_unique<OutFile>(report.dir / (tool + ".csv.gz.tmp"), /*gzip=*/true);
        it->second.buffer = std::string(kCommonHeader) + tool_header(parse_tool(tool)) + "\n";
      }
      return it->second;
    };
    for (Tool tool : kAllTools) open_tool(std::string(tool_name(tool)));

    ResultFilter filter;
    filter.from = *start;
    filter.to = *start + storage::kWeekNs;
    bool stopped = false;
    Status scanned = reader.scan(filter, [&](const ResultRow& row) {
      if (report.rows % 1024 == 0 && stop.stop_requested()) {
        stopped = true;
        return false;
      }
      bool safe = row.tool.find_first_of("/.\\") == std::string::npos && !row.tool.empty() &&
                  row.tool.size() <= 32;
      ToolFile& f = open_tool(safe ? row.tool : "other");
      if (f.rows == 0) f.first = row.start_ns;
      f.last = row.start_ns;
      ++f.rows;
      csv_row(f.buffer, row);
      if (f.buffer.size() >= (1 << 16)) {
        f.file->write(f.buffer);
        f.buffer.clear();
      }
      paths[{row.tool, row.src, row.dst}].add(row);
      if (++report.rows % 100'000 == 0 && progress) progress(report.rows);
      return true;
    });
    if (!scanned) return scanned.error();
    if (stopped) {
      tools.clear();  // closes the temporary files before they are removed
      for (const auto& entry : std::filesystem::directory_iterator(report.dir))
        if (entry.path().extension() == ".tmp") std::filesystem::remove(entry.path());
      return fail(ErrorCode::kCancelled, fmt::format("dump {}: stopped before the end", week));
    }

    nlohmann::json files = nlohmann::json::array();
    auto record = [&](const DumpFile& f, std::optional<std::pair<UtcNs, UtcNs>> range) {
      nlohmann::json entry{
          {"name", f.name}, {"rows", f.rows}, {"bytes", f.bytes}, {"sha256", f.sha256}};
      if (range) {
        entry["first_start_ns"] = range->first;
        entry["last_start_ns"] = range->second;
      }
      files.push_back(entry);
      report.files.push_back(f);
    };
    for (auto& [tool, f] : tools) {
      f.file->write(f.buffer);
      std::string name = tool + ".csv.gz";
      DumpFile done = f.file->finish(name, f.rows);
      std::filesystem::rename(report.dir / (name + ".tmp"), report.dir / name);
      record(done, f.rows ? std::optional(std::pair(f.first, f.last)) : std::nullopt);
    }

    OutFile summary(report.dir / "summary.csv.tmp", false);
    std::string text =
        "tool,src,dst,results,ok,sent,received,loss,rtt_min_ns,rtt_p50_ns,rtt_p90_ns,rtt_p99_ns,"
        "bandwidth_median_bps,first_start_ns,last_start_ns\n";
    for (const auto& [key, accumulator] : paths) {
      PathSummary s = accumulator.finish();
      const auto& [tool, src, dst] = key;
      csv_field(text, tool);
      text += ',';
      csv_field(text, src);
      text += ',';
      csv_field(text, dst);
      text += fmt::format(",{},{},{},{},", s.count, s.ok, s.sent, s.received);
      csv_opt(text, s.loss);
      for (const auto& v : {s.rtt_min_ns, s.rtt_p50_ns, s.rtt_p90_ns, s.rtt_p99_ns}) {
        text += ',';
        csv_opt(text, v);
      }
      text += ',';
      csv_opt(text, s.bandwidth_median_bps);
      text += fmt::format(",{},{}\n", s.first_ns, s.last_ns);
      if (text.size() >= (1 << 16)) {
        summary.write(text);
        text.clear();
      }
    }
    summary.write(text);
    record(summary.finish("summary.csv", static_cast<std::int64_t>(paths.size())), std::nullopt);
    std::filesystem::rename(report.dir / "summary.csv.tmp", report.dir / "summary.csv");

    nlohmann::json manifest{{"format", 1},
                            {"week", week},
                            {"from_ns", *start},
                            {"to_ns", *start + storage::kWeekNs},
                            {"from", format_utc(*start)},
                            {"to", format_utc(*start + storage::kWeekNs)},
                            {"rows", report.rows},
                            {"files", files}};
    OutFile manifest_file(report.dir / "manifest.json.tmp", false);
    manifest_file.write(manifest.dump(2) + "\n");
    report.files.push_back(manifest_file.finish("manifest.json", 0));
    std::filesystem::rename(report.dir / "manifest.json.tmp", report.dir / "manifest.json");
  } catch (const storage::ArchiveError& e) {
    return fail(ErrorCode::kUnavailable, fmt::format("dump {}: {}", week, e.what()));
  } catch (const std::exception& e) {
    return fail(ErrorCode::kIoError, fmt::format("dump {}: {}", week, e.what()));
  }
  return report;
}

DumpSchedule dump_schedule(UtcNs now, double delay_s) {
  auto delay = static_cast<std::int64_t>(delay_s * 1e9);
  UtcNs week_end = storage::week_start(now - delay);
  return {iso_week_of(week_end - storage::kWeekNs), week_end - storage::kWeekNs,
          week_end + storage::kWeekNs + delay};
}

namespace {

// The weeks weekly_dump_once owes at the due week's start: from the week after
// the newest complete dump in `out` (a YYYY-Www folder holding manifest.json,
// not after the due week) through the due week; only the due week when there
// is none; nothing when the due week is there.
std::vector<std::string> weeks_owed(const std::filesystem::path& out, UtcNs due_start) {
  std::optional<UtcNs> newest;
  std::error_code error;  // no dump_dir yet: no dump in it
  for (std::filesystem::directory_iterator it(out, error), end; !error && it != end;
       it.increment(error)) {
    const std::string name = it->path().filename().string();
    auto start = parse_iso_week(name);
    if (!start || *start > due_start || iso_week_of(*start) != name) continue;
    std::error_code missing;
    if (!std::filesystem::exists(it->path() / "manifest.json", missing)) continue;
    if (!newest || *start > *newest) newest = *start;
  }
  std::vector<std::string> weeks;
  for (UtcNs start = newest ? *newest + storage::kWeekNs : due_start; start <= due_start;
       start += storage::kWeekNs)
    weeks.push_back(iso_week_of(start));
  return weeks;
}

}  // namespace

WeeklyDumpRun weekly_dump_once(const Config& config, UtcNs now, std::stop_token stop) {
  WeeklyDumpRun run;
  run.schedule = dump_schedule(now, config.archive.dump_delay_s);
  const auto& out = config.archive.dump_dir;
  const auto weeks = weeks_owed(out, run.schedule.week_start_ns);
  if (weeks.empty()) {
    run.outcome = WeeklyDumpRun::Outcome::already_there;
    return run;
  }
  auto log = logger("dump");
  if (weeks.size() > 1)
    log->info("dump: {} weeks to write into {}, {} to {}: the weeks since its newest dump",
              weeks.size(), out.string(), weeks.front(), weeks.back());
  for (const auto& week : weeks) {
    log->info("dump {}: writing the weekly dump into {}", week, out.string());
    auto report = dump_week(config, week, out, {}, stop);
    if (!report) {
      run.error = report.error().message;
      if (!stop.stop_requested()) log->warn("{}; trying again in an hour", run.error);
      return run;
    }
    run.written.push_back(week);
    run.rows += report->rows;
    log->info("dump {}: {} rows in {}", week, report->rows, report->dir.string());
  }
  run.outcome = WeeklyDumpRun::Outcome::written;
  return run;
}

WeeklyDump::WeeklyDump(Config config, UtcClock now) {
  job_ = std::make_unique<PeriodicJob>(
      "dump",
      [config = std::move(config),
       now = std::move(now)](std::stop_token stop) -> std::chrono::duration<double> {
        const UtcNs started = now();
        WeeklyDumpRun run = weekly_dump_once(config, started, stop);
        std::chrono::duration<double> until_next(
            static_cast<double>(run.schedule.next_due_ns - started) / 1e9);
        if (run.outcome == WeeklyDumpRun::Outcome::failed && !stop.stop_requested())
          return std::min(until_next, std::chrono::duration<double>(3600));
        return until_next;
      });
}

WeeklyDump::~WeeklyDump() { stop(); }
void WeeklyDump::start() { job_->start(); }
void WeeklyDump::request_stop() { job_->request_stop(); }
void WeeklyDump::stop() { job_->stop(); }

}  // namespace flexmon
