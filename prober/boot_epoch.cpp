#include "prober/boot_epoch.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace flexmon::prober {

namespace {

[[noreturn]] void fail_errno(const std::string& what, const std::filesystem::path& file) {
  throw std::runtime_error(fmt::format("{} {}: {}", what, file.string(), std::strerror(errno)));
}

// Closes a descriptor on every path out.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::uint64_t next_boot_epoch(const std::filesystem::path& node_dir) {
  std::error_code ec;
  std::filesystem::create_directories(node_dir, ec);
  if (ec)
    throw std::runtime_error(
        fmt::format("cannot create state folder {}: {}", node_dir.string(), ec.message()));
  auto file = node_dir / "boot_epoch";
  std::uint64_t previous = 0;
  if (std::filesystem::exists(file)) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    std::string s = text.str();
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    auto [end, error] = std::from_chars(s.data(), s.data() + s.size(), previous);
    if (!in || s.empty() || error != std::errc() || end != s.data() + s.size())
      throw std::runtime_error(fmt::format("{}: expected a boot epoch (a number), found '{}'",
                                           file.string(), s.substr(0, 40)));
  }
  std::uint64_t epoch = previous + 1;
  std::string content = std::to_string(epoch) + "\n";

  auto temp = node_dir / "boot_epoch.tmp";
  {
    Fd out{::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    if (out.fd < 0) fail_errno("cannot create", temp);
    if (::write(out.fd, content.data(), content.size()) != static_cast<ssize_t>(content.size()))
      fail_errno("cannot write", temp);
    if (::fsync(out.fd) != 0) fail_errno("cannot fsync", temp);
  }
  if (::rename(temp.c_str(), file.c_str()) != 0) fail_errno("cannot rename to", file);
  Fd dir{::open(node_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (dir.fd < 0 || ::fsync(dir.fd) != 0) fail_errno("cannot fsync folder", node_dir);
  return epoch;
}

}  // namespace flexmon::prober
