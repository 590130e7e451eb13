#include "clients/dump.h"

#include <unistd.h>

#include <iostream>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "common/config.h"
#include "storage/flusher.h"
#include "storage/weekly_dump.h"

namespace flexmon {

void add_storage_commands(CLI::App& app, StorageCommands& c) {
  c.flush = app.add_subcommand("flush", "flush the cache to the archive now; prints rows and lag");
  c.flush->add_option("--config", c.config, "flexmon config file")->required();
  c.flush->add_flag("--status", c.status,
                    "do not flush: print how far behind the archive is and what the last flush "
                    "recorded (exit 1 if it could not reach the archive)");
  c.dump = app.add_subcommand(
      "dump", "write one ISO week's public dump: per-tool CSV.gz, summary.csv, manifest.json");
  c.dump->add_option("--config", c.config, "flexmon config file")->required();
  c.dump->add_option("--week", c.week, "ISO week, UTC, e.g. 2026-W07")->required();
  c.dump->add_option("--out", c.out, "output folder (default: archive.dump_dir)");
}

std::optional<int> run_storage_commands(const StorageCommands& c) {
  if (!c.flush->parsed() && !c.dump->parsed()) return std::nullopt;
  Config config;
  try {
    config = load_config(c.config);
  } catch (const ConfigError& e) {
    std::cerr << "flexmon: " << e.what() << "\n";
    return 78;
  }
  try {
    if (c.flush->parsed() && c.status) {
      FlushLag lag = flush_lag(config);
      std::cout << fmt::format("behind by {} rows, {:.0f} s; archived up to cache id {}\n",
                               lag.rows, lag.seconds, lag.archived_id);
      auto last = last_flush(config);
      if (!last) {
        std::cout << "no flush yet\n";
        return 0;
      }
      std::cout << fmt::format(
          "last flush {}: {}, {} rows archived; archive last reached {}\n", format_utc(last->at_ns),
          last->archive_ok ? "ok" : "archive unavailable (" + last->error + ")", last->rows,
          last->last_ok_ns ? format_utc(last->last_ok_ns) : std::string("never"));
      return last->archive_ok ? 0 : 1;
    }
    if (c.flush->parsed()) {
      FlushReport report = flush_once(config);
      std::cout << fmt::format(
          "flushed {} rows; deleted {} from the cache; behind by {} rows, {:.0f} s\n", report.rows,
          report.deleted, report.lag.rows, report.lag.seconds);
      if (!report.archive_ok) {
        std::cerr << "flexmon: archive unavailable: " << report.error << "\n";
        return 1;
      }
      return 0;
    }
    bool tty = ::isatty(STDERR_FILENO);
    auto result = dump_week(config, c.week,
                            c.out.empty() ? config.archive.dump_dir : std::filesystem::path(c.out),
                            [&](std::int64_t rows) {
                              if (tty) std::cerr << fmt::format("\rdump {}: {} rows", c.week, rows);
                            });
    if (tty) std::cerr << "\r\033[K";
    if (!result) {
      std::cerr << "flexmon: " << result.error().message << "\n";
      return result.error().code == ErrorCode::kInvalidInput ? 64 : 1;
    }
    std::cout << fmt::format("{}: {} rows\n", result->dir.string(), result->rows);
    for (const auto& f : result->files)
      std::cout << fmt::format("  {:<20} {:>10} rows {:>12} bytes  {}\n", f.name, f.rows, f.bytes,
                               f.sha256);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "flexmon: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace flexmon
