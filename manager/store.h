// The request store: every request in the manager's SQLite state database,
// so requests survive a restart. Ids come from an AUTOINCREMENT column and are
// never reused. Not thread-safe: the caller serialises access.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "common/sqlite.h"
#include "manager/model.h"

namespace flexmon::manager {

class RequestStore {
 public:
  // Opens or creates the state database (throws SqliteError).
  explicit RequestStore(const std::filesystem::path& file);

  // Stores a new active request and returns it with its number.
  Request add(const std::string& owner, const RequestSpec& spec, UtcNs created_ns);
  void set_state(std::uint64_t num, RequestState state);
  // Stores an edited request: spec (interval, duration, priority, args),
  // end and pending revert.
  void update(const Request& request);
  // Every request, oldest first.
  std::vector<Request> load_all();

 private:
  sqlite::Database db_;
};

}  // namespace flexmon::manager
