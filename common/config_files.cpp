#include "common/config_files.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

namespace flexmon {

namespace {

[[noreturn]] void refuse(const Config& config, const std::string& key,
                         const std::filesystem::path& path, const std::string& why) {
  throw ConfigError(fmt::format("{}: {}: {}: {}", config.file.string(), key, path.string(), why));
}

}  // namespace

void check_writable_location(const Config& config, const std::string& key,
                             const std::filesystem::path& path) {
  std::error_code ec;
  auto at = std::filesystem::absolute(path, ec);
  if (ec) refuse(config, key, path, ec.message());
  // Walk up to the first part that exists: the daemon creates the rest.
  while (!std::filesystem::exists(at, ec)) {
    if (ec) refuse(config, key, path, ec.message());
    if (!at.has_parent_path() || at.parent_path() == at) refuse(config, key, path, "no such path");
    at = at.parent_path();
  }
  if (!std::filesystem::is_directory(at, ec))
    refuse(config, key, path, fmt::format("{} is not a folder", at.string()));
  if (access(at.c_str(), W_OK | X_OK) != 0)
    refuse(config, key, path,
           fmt::format("cannot write in folder {}: {}", at.string(), std::strerror(errno)));
}

void check_sqlite_file(const Config& config, const std::string& key,
                       const std::filesystem::path& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) {
    check_writable_location(config, key, path.parent_path().empty() ? "." : path.parent_path());
    return;
  }
  if (!std::filesystem::is_regular_file(status))
    refuse(config, key, path, "not a regular file (an SQLite database is expected)");
  // SQLite's file format: a new database is an empty file or starts with
  // this header (sqlite.org/fileformat.html, "The Database Header").
  static constexpr char kHeader[16] = "SQLite format 3";
  std::array<char, sizeof kHeader> head{};
  std::ifstream in(path, std::ios::binary);
  if (!in) refuse(config, key, path, fmt::format("cannot read: {}", std::strerror(errno)));
  in.read(head.data(), head.size());
  if (in.gcount() != 0 && (in.gcount() != static_cast<std::streamsize>(head.size()) ||
                           std::memcmp(head.data(), kHeader, sizeof kHeader) != 0))
    refuse(config, key, path,
           "not an SQLite database (its first 16 bytes are not SQLite's header)");
  check_writable_location(config, key, path.parent_path().empty() ? "." : path.parent_path());
}

}  // namespace flexmon
