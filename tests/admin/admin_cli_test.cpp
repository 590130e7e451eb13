// flexmon-admin in process: its options, its output, and the exit status each
// outcome gives (from the error's kind, common/exit_status.h), on a SQLite
// archive in a temporary folder.
#include "admin/admin_cli.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/exit_status.h"

namespace flexmon {
namespace {

struct Run {
  int status;
  std::string out, err;
};

Run run(std::vector<std::string> args) {
  args.insert(args.begin(), "flexmon-admin");
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  int status = admin_main(static_cast<int>(argv.size()), argv.data());
  std::string out = testing::internal::GetCapturedStdout();
  return {status, out, testing::internal::GetCapturedStderr()};
}

class AdminCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / fmt::format("flexmon-admin-{}", ::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_ = (dir_ / "flexmon.yaml").string();
    write_config("archive.db");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void write_config(const std::string& archive_db) {
    std::ofstream(config_) << fmt::format(
        "data_dir: {}\n"
        "collector:\n"
        "  cache_db: cache.db\n"
        "archive:\n"
        "  sqlite_db: {}\n"
        "  dump_dir: dumps\n",
        dir_.string(), archive_db);
  }

  std::filesystem::path dir_;
  std::string config_;
};

TEST_F(AdminCliTest, HelpNamesTheCommandsAndTheExitStatuses) {
  auto help = run({"--help"});
  EXPECT_EQ(help.status, kExitOk);
  EXPECT_NE(help.out.find("flush"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("dump"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("69 archive unreachable"), std::string::npos) << help.out;
  auto flush_help = run({"flush", "--help"});
  EXPECT_EQ(flush_help.status, kExitOk);
  EXPECT_NE(flush_help.out.find("--status"), std::string::npos) << flush_help.out;
}

TEST_F(AdminCliTest, BadUsageExits64) {
  EXPECT_EQ(run({}).status, kExitUsage);
  EXPECT_EQ(run({"dump", "--config", config_}).status, kExitUsage);  // no --week
  EXPECT_EQ(run({"flush"}).status, kExitUsage);                      // no --config
  auto week = run({"dump", "--config", config_, "--week", "2026-W99"});
  EXPECT_EQ(week.status, kExitUsage) << week.err;
  EXPECT_EQ(week.err.rfind("flexmon-admin: ", 0), 0u) << week.err;
}

TEST_F(AdminCliTest, AConfigThatDoesNotLoadExits78) {
  EXPECT_EQ(run({"flush", "--config", (dir_ / "missing.yaml").string()}).status, kExitConfig);
}

TEST_F(AdminCliTest, FlushThenStatusReportsTheFlush) {
  auto before = run({"flush", "--status", "--config", config_});
  EXPECT_EQ(before.status, kExitOk) << before.err;
  EXPECT_NE(before.out.find("behind by 0 rows"), std::string::npos) << before.out;
  EXPECT_NE(before.out.find("no flush yet"), std::string::npos) << before.out;

  auto flush = run({"flush", "--config", config_});
  EXPECT_EQ(flush.status, kExitOk) << flush.err;
  EXPECT_EQ(flush.out.rfind("flushed 0 rows; deleted 0 from the cache; behind by 0 rows", 0), 0u)
      << flush.out;

  auto after = run({"flush", "--status", "--config", config_});
  EXPECT_EQ(after.status, kExitOk) << after.err;
  EXPECT_NE(after.out.find(": ok, 0 rows archived"), std::string::npos) << after.out;
}

TEST_F(AdminCliTest, AnUnreachableArchiveExits69AndTheStatusThen1) {
  std::ofstream(dir_ / "blocked") << "x";  // the archive's folder is a file
  write_config("blocked/archive.db");
  auto flush = run({"flush", "--config", config_});
  EXPECT_EQ(flush.status, kExitUnavailable) << flush.out << flush.err;
  EXPECT_NE(flush.err.find("\nflexmon-admin: archive unavailable: sqlite: cannot open"),
            std::string::npos)
      << flush.err;  // after the flush's own log line

  auto status = run({"flush", "--status", "--config", config_});
  EXPECT_EQ(status.status, kExitFailure) << status.err;
  EXPECT_NE(status.out.find("archive unavailable ("), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("archive last reached never"), std::string::npos) << status.out;
}

TEST_F(AdminCliTest, DumpWritesTheWeekAndListsItsFiles) {
  auto dump = run({"dump", "--config", config_, "--week", "2026-W07"});
  EXPECT_EQ(dump.status, kExitOk) << dump.err;
  EXPECT_EQ(dump.out.rfind((dir_ / "dumps" / "2026-W07").string() + ": 0 rows\n", 0), 0u)
      << dump.out;
  EXPECT_NE(dump.out.find("manifest.json"), std::string::npos) << dump.out;
  EXPECT_TRUE(std::filesystem::exists(dir_ / "dumps" / "2026-W07" / "manifest.json"));
}

TEST_F(AdminCliTest, ADumpThatCannotWriteExits74) {
  std::ofstream(dir_ / "file") << "x";
  auto dump = run({"dump", "--config", config_, "--week", "2026-W07", "--out",
                   (dir_ / "file" / "out").string()});
  EXPECT_EQ(dump.status, kExitIoError) << dump.out << dump.err;
}

TEST(ExitStatus, EachErrorCodeHasItsSysexit) {
  EXPECT_EQ(exit_status(ErrorCode::kInvalidInput), 64);
  EXPECT_EQ(exit_status(ErrorCode::kNotFound), 66);
  EXPECT_EQ(exit_status(ErrorCode::kUnavailable), 69);
  EXPECT_EQ(exit_status(ErrorCode::kIoError), 74);
  EXPECT_EQ(exit_status(ErrorCode::kCancelled), 75);
  EXPECT_EQ(exit_status(ErrorCode::kDenied), 77);
}

}  // namespace
}  // namespace flexmon
