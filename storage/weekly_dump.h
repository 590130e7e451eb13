// Weekly public dumps: for one ISO week (UTC), per tool a gzip-compressed CSV
// of the results, a summary CSV per path, and manifest.json with row counts,
// time range and the SHA-256 of every file. The same data gives
// byte-identical files (fixed order, gzip header without time or name, no
// timestamps in the manifest). Rows are streamed: memory stays flat however
// large the week.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/result.h"

namespace flexmon {

class PeriodicJob;

// "2026-W47" -> Monday 00:00 UTC of that ISO week, in ns; an Error names what
// is wrong with the text.
Result<UtcNs> parse_iso_week(const std::string& text);
// The ISO week holding t, e.g. "2026-W47".
std::string iso_week_of(UtcNs t);

struct DumpFile {
  std::string name;  // relative to the week's folder
  std::int64_t rows = 0;
  std::int64_t bytes = 0;
  std::string sha256;  // hex
};

struct DumpReport {
  std::filesystem::path dir;  // OUT/YYYY-Www
  std::int64_t rows = 0;
  std::vector<DumpFile> files;  // manifest.json last (not hashed in itself)
};

// Writes OUT/YYYY-Www/{latency,abw,throughput}.csv.gz, summary.csv and
// manifest.json (files are written under temporary names and renamed).
// `progress` (may be empty) is called every 100,000 rows with the count.
// When `stop` is requested it ends early with an Error, leaving no files of
// its own behind but those an earlier complete run wrote.
Result<DumpReport> dump_week(const Config& config, const std::string& week,
                             const std::filesystem::path& out,
                             const std::function<void(std::int64_t rows)>& progress = {},
                             std::stop_token stop = {});

// The scheduled weekly dump at `now`: the last ISO week that ended at least
// `delay_s` ago, and when the next one is due (that week's end + a week +
// delay).
struct DumpSchedule {
  std::string week;         // "2026-W47"
  UtcNs week_start_ns = 0;  // its Monday 00:00 UTC
  UtcNs next_due_ns = 0;
};
DumpSchedule dump_schedule(UtcNs now, double delay_s);

// One look of the scheduled dump at `now`: writes into archive.dump_dir the
// due week and, when the newest week already dumped there is older, every
// week between them, oldest first, so that a collector that was down (or
// failing) across week ends leaves no gap in the public dumps. Weeks before
// the newest one dumped are never written here (an empty dump_dir gets the
// due week only): those are written by hand with `flexmon-admin dump --week`.
struct WeeklyDumpRun {
  enum class Outcome { written, already_there, failed } outcome = Outcome::failed;
  DumpSchedule schedule;
  std::vector<std::string> written;  // weeks written, oldest first
  std::int64_t rows = 0;             // in all the weeks written
  std::string error;                 // when failed (weeks written before it stay)
};
WeeklyDumpRun weekly_dump_once(const Config& config, UtcNs now, std::stop_token stop = {});

// The collector's scheduled weekly dump (archive.dump_weekly): on its own
// thread, runs weekly_dump_once() at start and whenever the next week is due.
// A week whose manifest.json is already there is not written again (so a
// restart or a second collector does not redo it). A failed dump is retried
// hourly; stop() returns within moments, abandoning a dump in progress.
class WeeklyDump {
 public:
  // `now` places the schedule (utc_now_ns in the collector).
  explicit WeeklyDump(Config config, UtcClock now = utc_now_ns);
  ~WeeklyDump();
  WeeklyDump(const WeeklyDump&) = delete;
  WeeklyDump& operator=(const WeeklyDump&) = delete;
  void start();
  void request_stop();  // returns at once
  // Requests and waits a few seconds at most; a run still stuck then is left
  // to the process exit (storage/periodic_job.h says why).
  void stop();

 private:
  std::unique_ptr<PeriodicJob> job_;
};

}  // namespace flexmon
