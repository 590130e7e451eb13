#include "prober/spool.h"

namespace flexmon::prober {

bool MemorySpool::put(std::uint64_t seq, std::string result) {
  if (entries_.size() >= capacity_) return false;
  entries_.insert_or_assign(seq, std::move(result));
  return true;
}

std::size_t MemorySpool::erase(std::uint64_t first, std::uint64_t last) {
  if (first > last) return 0;
  auto begin = entries_.lower_bound(first);
  auto end = entries_.upper_bound(last);
  std::size_t n = 0;
  for (auto it = begin; it != end; ++it) ++n;
  entries_.erase(begin, end);
  return n;
}

void MemorySpool::scan(std::uint64_t from,
                       const std::function<bool(std::uint64_t, const std::string&)>& visit) const {
  for (auto it = entries_.lower_bound(from); it != entries_.end(); ++it)
    if (!visit(it->first, it->second)) return;
}

}  // namespace flexmon::prober
