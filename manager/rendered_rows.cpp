#include "manager/rendered_rows.h"

#include <functional>

namespace flexmon::manager {

namespace {
// What a kept row costs besides its text: the key, the map node, the shared
// string's control block.
constexpr std::size_t kRowOverheadBytes = 160;
}  // namespace

RenderedRows::RenderedRows(std::size_t budget_bytes)
    : generation_bytes_(budget_bytes / kShards / 2) {}

std::size_t RenderedRows::KeyHash::operator()(const Key& key) const {
  // std::hash of an integer is the integer itself: mix the parts (the
  // splitmix64 finaliser) so that every bit of the hash, and so the shard,
  // depends on all of them.
  std::uint64_t h = std::hash<std::string>()(key.node);
  for (std::int64_t part : {key.boot_epoch, key.seq, key.start_ns}) {
    h += static_cast<std::uint64_t>(part) + 0x9e3779b97f4a7c15ULL;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    h ^= h >> 31;
  }
  return static_cast<std::size_t>(h);
}

RenderedRows::Key RenderedRows::key_of(const ResultRow& row) {
  return {row.node, row.boot_epoch, row.seq, row.start_ns};
}

RenderedRows::Shard& RenderedRows::shard_of(const Key& key) {
  return shards_[KeyHash()(key) % kShards];
}

std::shared_ptr<const std::string> RenderedRows::find(const ResultRow& key_and_time) {
  Key key = key_of(key_and_time);
  Shard& shard = shard_of(key);
  {
    std::shared_lock lock(shard.mu);
    if (auto it = shard.current.find(key); it != shard.current.end()) return it->second;
    if (!shard.previous.contains(key)) return nullptr;
  }
  // Kept before the last rotation and shown again: keep it in `current`.
  std::unique_lock lock(shard.mu);
  if (auto it = shard.current.find(key); it != shard.current.end()) return it->second;
  auto it = shard.previous.find(key);
  if (it == shard.previous.end()) return nullptr;
  auto xml = it->second;
  shard.previous.erase(it);
  add(shard, std::move(key), xml);
  return xml;
}

void RenderedRows::keep(const ResultRow& row, std::string xml) {
  Key key = key_of(row);
  Shard& shard = shard_of(key);
  auto kept = std::make_shared<const std::string>(std::move(xml));
  std::unique_lock lock(shard.mu);
  add(shard, std::move(key), std::move(kept));
}

void RenderedRows::add(Shard& shard, Key key, std::shared_ptr<const std::string> xml) {
  const std::size_t bytes = xml->size() + key.node.size() + kRowOverheadBytes;
  if (bytes > generation_bytes_) return;
  if (shard.current_bytes + bytes > generation_bytes_) {
    shard.previous = std::move(shard.current);
    shard.current = Rows();
    shard.current_bytes = 0;
  }
  if (shard.current.try_emplace(std::move(key), std::move(xml)).second)
    shard.current_bytes += bytes;
}

}  // namespace flexmon::manager
