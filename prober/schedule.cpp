#include "prober/schedule.h"

#include <stdexcept>

namespace flexmon::prober {

Schedule::Schedule(MonoTime anchor, Nanos interval) : anchor_(anchor), interval_(interval) {
  if (interval_.count() <= 0) throw std::invalid_argument("schedule interval must be positive");
}

MonoTime Schedule::slot_time(std::uint64_t index) const {
  return anchor_ + interval_ * static_cast<std::int64_t>(index);
}

Slot Schedule::next_after(std::uint64_t current, MonoTime now) const {
  Slot next{current + 1, slot_time(current + 1), 0};
  if (next.at > now) return next;
  // The first slot strictly after `now`, computed, not stepped to.
  auto elapsed = (now - anchor_).count();
  auto first_future = static_cast<std::uint64_t>(elapsed / interval_.count()) + 1;
  next.skipped = first_future - next.index;
  next.index = first_future;
  next.at = slot_time(first_future);
  return next;
}

}  // namespace flexmon::prober
