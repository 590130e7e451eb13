// Query answers' rows kept as the XML they were sent as, by the result's key
// and time. A stored result never changes, so a page that shows it again
// (a dashboard asking for a path's newest rows every few seconds) sends the
// kept text instead of reading all 27 columns and writing them out again.
// Which rows a page holds is still read from the databases at every call.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "storage/reader.h"

namespace flexmon::manager {

class RenderedRows {
 public:
  // Keeps at most about `budget_bytes` of XML (and the keys), in shards
  // locked separately; finding takes a shared lock, so connection threads
  // showing the same rows do not wait for each other.
  explicit RenderedRows(std::size_t budget_bytes);

  // The kept XML of the result with this key and time, or null.
  std::shared_ptr<const std::string> find(const ResultRow& key_and_time);
  // Keeps `xml` for the result `row`; the least recently kept rows make room.
  void keep(const ResultRow& row, std::string xml);

 private:
  struct Key {
    std::string node;
    std::int64_t boot_epoch = 0, seq = 0;
    UtcNs start_ns = 0;  // with the key: a prober that lost its disk and reuses an epoch
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& key) const;
  };
  using Rows = std::unordered_map<Key, std::shared_ptr<const std::string>, KeyHash>;
  // Two generations: rows are kept in `current`; when it is full it becomes
  // `previous` and the one before is dropped. A row found in `previous` is
  // kept in `current` again, so rows still shown survive.
  struct Shard {
    // Shared for finding (every row of every page), exclusive for keeping.
    std::shared_mutex mu;
    Rows current, previous;
    std::size_t current_bytes = 0;
  };
  static Key key_of(const ResultRow& row);
  Shard& shard_of(const Key& key);
  void add(Shard& shard, Key key, std::shared_ptr<const std::string> xml);

  static constexpr std::size_t kShards = 16;
  std::size_t generation_bytes_;  // per shard
  std::array<Shard, kShards> shards_;
};

}  // namespace flexmon::manager
