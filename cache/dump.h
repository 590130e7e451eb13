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
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"

namespace flexmon {

struct Config;

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
Result<DumpReport> dump_week(const Config& config, const std::string& week,
                             const std::filesystem::path& out,
                             const std::function<void(std::int64_t rows)>& progress = {});

}  // namespace flexmon
