#include "admin/admin_cli.h"

#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <string>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "common/config.h"
#include "common/exit_status.h"
#include "storage/flusher.h"
#include "storage/weekly_dump.h"

namespace flexmon {

namespace {

// The error's message on stderr; its kind picks the exit status.
int exit_with(const Error& error) {
  std::cerr << "flexmon-admin: " << error.message << "\n";
  return exit_status(error.code);
}

// `flush --status`: the lag and what the last flush recorded. Exits 1 when
// that flush could not reach the archive: the answer is "not ok", the
// command itself did not fail (scripts and monitors branch on it).
int print_flush_status(const Config& config) {
  FlushLag lag = flush_lag(config);
  std::cout << fmt::format("behind by {} rows, {:.0f} s; archived up to cache id {}\n", lag.rows,
                           lag.seconds, lag.archived_id);
  auto last = last_flush(config);
  if (!last) {
    std::cout << "no flush yet\n";
    return kExitOk;
  }
  std::cout << fmt::format(
      "last flush {}: {}, {} rows archived; archive last reached {}\n", format_utc(last->at_ns),
      last->archive_ok ? "ok" : "archive unavailable (" + last->error + ")", last->rows,
      last->last_ok_ns ? format_utc(last->last_ok_ns) : std::string("never"));
  return last->archive_ok ? kExitOk : kExitFailure;
}

int flush(const Config& config) {
  FlushReport done = flush_once(config);
  std::cout << fmt::format(
      "flushed {} rows; deleted {} from the cache; behind by {} rows, {:.0f} s\n", done.rows,
      done.deleted, done.lag.rows, done.lag.seconds);
  if (!done.archive_ok)
    return exit_with(fail(ErrorCode::kUnavailable, "archive unavailable: " + done.error));
  return kExitOk;
}

// Progress ("dump W: N rows") goes to stderr only on a terminal, where it is
// overwritten in place and erased at the end.
int dump(const Config& config, const std::string& week, const std::filesystem::path& out) {
  bool tty = ::isatty(STDERR_FILENO);
  auto result = dump_week(config, week, out, [&](std::int64_t rows) {
    if (tty) std::cerr << fmt::format("\rdump {}: {} rows", week, rows);
  });
  if (tty) std::cerr << "\r\033[K";
  if (!result) return exit_with(result.error());
  std::cout << fmt::format("{}: {} rows\n", result->dir.string(), result->rows);
  for (const auto& f : result->files)
    std::cout << fmt::format("  {:<20} {:>10} rows {:>12} bytes  {}\n", f.name, f.rows, f.bytes,
                             f.sha256);
  return kExitOk;
}

}  // namespace

int admin_main(int argc, char** argv) {
  CLI::App app{
      "flexmon-admin: storage work on the collector's host, with its config file: flush the "
      "cache to the archive, report the flush, write a weekly dump.",
      "flexmon-admin"};
  app.require_subcommand(1);
  app.footer(
      "Exit status: 0 success, 1 flush --status: the last flush failed (or another failure), "
      "64 bad usage, 69 archive unreachable, 74 write error, 78 bad config.");
  std::string config_file, week, out;
  bool status = false;
  auto* flush_command =
      app.add_subcommand("flush", "flush the cache to the archive now; prints rows and lag");
  flush_command->add_option("--config", config_file, "flexmon config file")->required();
  flush_command->add_flag("--status", status,
                          "do not flush: print how far behind the archive is and what the last "
                          "flush recorded (exit 1 if it could not reach the archive)");
  auto* dump_command = app.add_subcommand(
      "dump", "write one ISO week's public dump: per-tool CSV.gz, summary.csv, manifest.json");
  dump_command->add_option("--config", config_file, "flexmon config file")->required();
  dump_command->add_option("--week", week, "ISO week, UTC, e.g. 2026-W07")->required();
  dump_command->add_option("--out", out, "output folder (default: archive.dump_dir)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      app.exit(e);
      return kExitOk;
    }
    std::cerr << "flexmon-admin: " << e.what() << "\nRun 'flexmon-admin --help' for usage.\n";
    return kExitUsage;
  }

  Config config;
  try {
    config = load_config(config_file);
  } catch (const ConfigError& e) {
    std::cerr << "flexmon-admin: " << e.what() << "\n";
    return kExitConfig;
  }
  try {
    if (flush_command->parsed()) return status ? print_flush_status(config) : flush(config);
    return dump(config, week, out.empty() ? config.archive.dump_dir : std::filesystem::path(out));
  } catch (const std::exception& e) {  // a broken cache file, an unwritable folder
    std::cerr << "flexmon-admin: " << e.what() << "\n";
    return kExitFailure;
  }
}

}  // namespace flexmon
