// The spool holds results from the moment they are numbered until a collector
// acknowledges them. This issue has an in-memory spool; a durable on-disk one
// replaces it behind the same interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace flexmon::prober {

// Results of the current boot epoch, by seq, serialized (wire::Result).
class Spool {
 public:
  virtual ~Spool() = default;
  // Keeps a result; false (and the result is not kept) when the spool is full.
  virtual bool put(std::uint64_t seq, std::string result) = 0;
  // Removes the results with first <= seq <= last; returns how many.
  virtual std::size_t erase(std::uint64_t first, std::uint64_t last) = 0;
  virtual std::size_t size() const = 0;
  // Visits results with seq >= from in seq order while `visit` returns true.
  virtual void scan(std::uint64_t from,
                    const std::function<bool(std::uint64_t, const std::string&)>& visit) const = 0;
};

// An ordered map in memory, bounded; lost when the process ends.
class MemorySpool : public Spool {
 public:
  explicit MemorySpool(std::size_t capacity = 1'000'000) : capacity_(capacity) {}
  bool put(std::uint64_t seq, std::string result) override;
  std::size_t erase(std::uint64_t first, std::uint64_t last) override;
  std::size_t size() const override { return entries_.size(); }
  void scan(std::uint64_t from,
            const std::function<bool(std::uint64_t, const std::string&)>& visit) const override;

 private:
  std::size_t capacity_;
  std::map<std::uint64_t, std::string> entries_;
};

}  // namespace flexmon::prober
