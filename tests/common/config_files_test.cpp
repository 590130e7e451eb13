// check_writable_location / check_sqlite_file: what --check-config finds
// wrong in a config's paths before a daemon starts.
#include "common/config_files.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "common/sqlite.h"

namespace flexmon {
namespace {

class ConfigFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = std::filesystem::temp_directory_path() /
           ("flexmon-config-files-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(dir_);
    config_.file = "test.yaml";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The ConfigError's message, or "ok".
  std::string sqlite_error(const std::filesystem::path& path) {
    try {
      check_sqlite_file(config_, "collector.cache_db", path);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "ok";
  }

  void write(const std::filesystem::path& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
  }

  std::filesystem::path dir_;
  Config config_;
};

TEST_F(ConfigFiles, AbsentEmptyAndRealDatabasesPass) {
  EXPECT_EQ(sqlite_error(dir_ / "cache.db"), "ok");
  EXPECT_EQ(sqlite_error(dir_ / "not" / "yet" / "made" / "cache.db"), "ok");
  write(dir_ / "empty.db", "");
  EXPECT_EQ(sqlite_error(dir_ / "empty.db"), "ok");
  { sqlite::Database db(dir_ / "real.db"); }
  EXPECT_EQ(sqlite_error(dir_ / "real.db"), "ok");
}

TEST_F(ConfigFiles, AFileThatIsNotSqliteIsRefusedByKeyAndPath) {
  write(dir_ / "notes.txt", "flexmon: these are not the results you are looking for\n");
  EXPECT_EQ(sqlite_error(dir_ / "notes.txt"),
            "test.yaml: collector.cache_db: " + (dir_ / "notes.txt").string() +
                ": not an SQLite database (its first 16 bytes are not SQLite's header)");
  write(dir_ / "short.db", "SQLite");
  EXPECT_NE(sqlite_error(dir_ / "short.db").find("not an SQLite database"), std::string::npos);
  std::filesystem::create_directories(dir_ / "a-folder.db");
  EXPECT_NE(sqlite_error(dir_ / "a-folder.db").find("not a regular file"), std::string::npos);
}

TEST_F(ConfigFiles, AFileWhereAFolderIsNeededIsRefused) {
  write(dir_ / "data", "a file, not a folder");
  const std::string error = sqlite_error(dir_ / "data" / "cache.db");
  EXPECT_NE(error.find((dir_ / "data").string() + " is not a folder"), std::string::npos) << error;
  EXPECT_THROW(check_writable_location(config_, "prober.state_dir", dir_ / "data" / "n1"),
               ConfigError);
  EXPECT_NO_THROW(check_writable_location(config_, "prober.state_dir", dir_ / "prober" / "n1"));
}

}  // namespace
}  // namespace flexmon
