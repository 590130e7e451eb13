#include "common/sqlite.h"

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace flexmon::sqlite {

namespace {
[[noreturn]] void raise(sqlite3* db, std::string_view what) {
  throw SqliteError(fmt::format("sqlite: {}: {}", what, db ? sqlite3_errmsg(db) : "out of memory"));
}

// The SIGBUS report (see Database). Everything the handler calls is
// async-signal-safe: open, read, write, close, sigaction, raise, _exit.

// Appends text to buffer[length..size), truncating; keeps it terminated.
void append(char* buffer, std::size_t size, std::size_t& length, const char* text) {
  while (*text && length + 1 < size) buffer[length++] = *text++;
  buffer[length] = '\0';
}

void append_hex(char* buffer, std::size_t size, std::size_t& length, std::uintptr_t value) {
  char digits[2 + 2 * sizeof value + 1] = "0x";
  int shift = 4 * 2 * sizeof value - 4;
  while (shift > 0 && ((value >> shift) & 0xf) == 0) shift -= 4;
  std::size_t at = 2;
  for (; shift >= 0; shift -= 4) digits[at++] = "0123456789abcdef"[(value >> shift) & 0xf];
  digits[at] = '\0';
  append(buffer, size, length, digits);
}

std::uintptr_t parse_hex(const char*& p, const char* end) {
  std::uintptr_t value = 0;
  for (; p < end; ++p) {
    int digit = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
    if (digit < 0) break;
    value = value * 16 + static_cast<std::uintptr_t>(digit);
  }
  return value;
}

// The file mapped at `address` (a line "START-END PERMS OFFSET DEV INODE
// PATH" of /proc/self/maps whose range holds it), copied into `path`;
// false when the address is in no file's mapping.
bool mapped_file(std::uintptr_t address, char* path, std::size_t size) {
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buffer[8192];
  std::size_t have = 0;
  bool found = false, end_of_file = false;
  while (!found) {
    if (!end_of_file && have < sizeof buffer) {
      ssize_t n = ::read(fd, buffer + have, sizeof buffer - have);
      if (n <= 0)
        end_of_file = true;
      else
        have += static_cast<std::size_t>(n);
    }
    auto* newline = static_cast<char*>(std::memchr(buffer, '\n', have));
    if (!newline) {
      if (end_of_file || have == sizeof buffer) break;
      continue;
    }
    const char* p = buffer;
    std::uintptr_t start = parse_hex(p, newline);
    ++p;
    std::uintptr_t stop = parse_hex(p, newline);
    if (address >= start && address < stop) {
      const char* name = static_cast<const char*>(std::memchr(p, '/', newline - p));
      if (name) {
        std::size_t length = 0;
        path[0] = '\0';
        for (; name < newline && length + 1 < size; ++name) path[length++] = *name;
        path[length] = '\0';
        found = true;
      }
      break;
    }
    std::size_t used = static_cast<std::size_t>(newline + 1 - buffer);
    std::memmove(buffer, newline + 1, have - used);
    have -= used;
  }
  ::close(fd);
  return found;
}

void on_sigbus(int signal, siginfo_t* info, void*) {
  char path[1024];
  if (info->si_code <= 0 ||
      !mapped_file(reinterpret_cast<std::uintptr_t>(info->si_addr), path, sizeof path)) {
    // Not a mapped file's fault: the default action, a core dump, when the
    // instruction runs again (or now, for a SIGBUS that kill() sent).
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    ::sigaction(signal, &default_action, nullptr);
    if (info->si_code <= 0) ::raise(signal);
    return;
  }
  char line[1536];
  std::size_t length = 0;
  append(line, sizeof line, length, program_invocation_short_name);
  append(line, sizeof line, length, ": SIGBUS writing ");
  append_hex(line, sizeof line, length, reinterpret_cast<std::uintptr_t>(info->si_addr));
  append(line, sizeof line, length, " in ");
  append(line, sizeof line, length, path);
  append(line, sizeof line, length,
         ", a file memory-mapped by SQLite: it cannot be written any more (made immutable, or its "
         "file system read-only, while in use); stopping at once\n");
  for (std::size_t at = 0; at < length;) {
    ssize_t n = ::write(STDERR_FILENO, line + at, length - at);
    if (n <= 0 && errno != EINTR) break;
    if (n > 0) at += static_cast<std::size_t>(n);
  }
  ::_exit(kExitMappedFileFault);
}

// Installs on_sigbus for SIGBUS; once per process.
void report_mapped_file_faults() {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction action {};
    action.sa_sigaction = &on_sigbus;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (::sigaction(SIGBUS, &action, nullptr) != 0)
      throw std::runtime_error(fmt::format("sigaction SIGBUS: {}", std::strerror(errno)));
  });
}

}  // namespace

namespace {

// The part of unwritable_reason that statx answers: immutable, append-only.
std::string attribute_reason(const std::filesystem::path& file) {
  struct statx attributes {};
  if (::statx(AT_FDCWD, file.c_str(), 0, STATX_BASIC_STATS, &attributes) != 0) return {};
  if (attributes.stx_attributes_mask & attributes.stx_attributes & STATX_ATTR_IMMUTABLE)
    return fmt::format("{} is immutable (chattr +i)", file.string());
  if (attributes.stx_attributes_mask & attributes.stx_attributes & STATX_ATTR_APPEND)
    return fmt::format("{} is append-only (chattr +a)", file.string());
  return {};
}

std::string mount_reason(const std::filesystem::path& file) {
  struct statvfs mount {};
  if (::statvfs(file.c_str(), &mount) == 0 && (mount.f_flag & ST_RDONLY))
    return fmt::format("{} is on a read-only file system", file.string());
  return {};
}

}  // namespace

std::string unwritable_reason(const std::filesystem::path& file) {
  std::string why = attribute_reason(file);
  return why.empty() ? mount_reason(file) : why;
}

Database::Database(const std::filesystem::path& file, bool read_only) : file_(file) {
  report_mapped_file_faults();
  if (!read_only)
    if (std::string why = unwritable(); !why.empty())
      throw UnwritableError(
          fmt::format("sqlite: cannot open {} for writing: {}", file.string(), why));
  int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  flags |= SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(file.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    std::string message = fmt::format("cannot open {}", file.string());
    sqlite3* failed = db_;
    db_ = nullptr;
    std::string reason = failed ? sqlite3_errmsg(failed) : "out of memory";
    sqlite3_close(failed);
    throw SqliteError(fmt::format("sqlite: {}: {}", message, reason));
  }
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  sqlite3_extended_result_codes(db_, 1);
  try {
    if (!read_only) use_wal();
    exec("PRAGMA foreign_keys=ON");
  } catch (const SqliteError& e) {
    sqlite3_close_v2(db_);  // no destructor runs for a constructor that throws
    db_ = nullptr;
    throw SqliteError(fmt::format("{} (opening {})", e.what(), file.string()));
  }
}

// A new file is switched to WAL by whichever connection comes first; a switch
// that meets another connection's lock fails with SQLITE_BUSY at once (SQLite
// calls no busy handler there), so it is tried again for as long as the busy
// timeout allows. The processes open the same new files together at a first
// start: the collector's flush and the manager's reader, the archive.
void Database::use_wal() {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  for (;;) {
    int rc = sqlite3_exec(db_, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) return;
    if ((rc & 0xff) != SQLITE_BUSY || std::chrono::steady_clock::now() >= give_up)
      raise(db_, "PRAGMA journal_mode=WAL");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

Database::~Database() { sqlite3_close_v2(db_); }

// Four system calls: the -wal and -shm lie beside the database, on its file
// system.
std::string Database::unwritable() const {
  for (const char* suffix : {"", "-wal", "-shm"})
    if (std::string why = attribute_reason(file_.string() + suffix); !why.empty()) return why;
  return mount_reason(file_);
}

void Database::exec(std::string_view sql) {
  std::string owned(sql);
  char* error = nullptr;
  if (sqlite3_exec(db_, owned.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error ? error : sqlite3_errmsg(db_);
    sqlite3_free(error);
    throw SqliteError(fmt::format("sqlite: {}: {}", owned.substr(0, 80), message));
  }
}

Statement Database::prepare(std::string_view sql) { return Statement(db_, sql); }

std::int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

int Database::changes() const { return sqlite3_changes(db_); }

Statement::Statement(sqlite3* db, std::string_view sql) : db_(db) {
  if (sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                         &stmt_, nullptr) != SQLITE_OK)
    raise(db, fmt::format("prepare '{}'", sql.substr(0, 80)));
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement::Statement(Statement&& other) noexcept : db_(other.db_), stmt_(other.stmt_) {
  other.stmt_ = nullptr;
}

Statement& Statement::bind(int index, std::int64_t value) {
  if (sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK) raise(db_, "bind");
  return *this;
}

Statement& Statement::bind(int index, double value) {
  if (sqlite3_bind_double(stmt_, index, value) != SQLITE_OK) raise(db_, "bind");
  return *this;
}

Statement& Statement::bind(int index, std::string_view value) {
  if (sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                        SQLITE_TRANSIENT) != SQLITE_OK)
    raise(db_, "bind");
  return *this;
}

Statement& Statement::bind_blob(int index, std::string_view value) {
  if (sqlite3_bind_blob(stmt_, index, value.data(), static_cast<int>(value.size()),
                        SQLITE_TRANSIENT) != SQLITE_OK)
    raise(db_, "bind");
  return *this;
}

Statement& Statement::bind_null(int index) {
  if (sqlite3_bind_null(stmt_, index) != SQLITE_OK) raise(db_, "bind");
  return *this;
}

Statement& Statement::bind(int index, const std::optional<std::string>& value) {
  return value ? bind(index, std::string_view(*value)) : bind_null(index);
}

bool Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  raise(db_, fmt::format("step '{}'", std::string_view(sqlite3_sql(stmt_)).substr(0, 80)));
}

void Statement::run() {
  while (step()) {
  }
  reset();
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool Statement::is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::int64_t Statement::int64(int column) const { return sqlite3_column_int64(stmt_, column); }

double Statement::real(int column) const { return sqlite3_column_double(stmt_, column); }

std::string Statement::text(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  return text ? std::string(reinterpret_cast<const char*>(text),
                            static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
              : std::string();
}

Transaction::Transaction(Database& db) : db_(db) {
  if (std::string why = db_.unwritable(); !why.empty())
    throw UnwritableError(fmt::format("sqlite: not writing: {}", why));
  db_.exec("BEGIN IMMEDIATE");
}

Transaction::~Transaction() {
  if (!done_) {
    try {
      db_.exec("ROLLBACK");
    } catch (const SqliteError&) {
      // The transaction is already gone (SQLite rolled it back itself).
    }
  }
}

void Transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace flexmon::sqlite
