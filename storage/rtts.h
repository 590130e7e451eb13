// The per-packet RTTs of a latency result. Storage keeps them in the column
// rtts_ns as a JSON array of integer nanoseconds with null for a lost packet,
// "[123,null,456]"; that text is storage's business: readers outside storage
// get a PacketRtts and visit the packets decoded.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace flexmon {

// Calls visit(std::optional<std::int64_t>) for each packet in order: the RTT
// in ns, or nullopt for a lost packet. Only what the collector writes is
// read: anything other than digits, "null", commas and brackets is skipped.
template <typename Visit>
void visit_rtts(std::string_view json, Visit&& visit) {
  std::int64_t value = 0;
  bool in_number = false;
  for (char ch : json) {
    if (ch >= '0' && ch <= '9') {
      value = value * 10 + (ch - '0');
      in_number = true;
      continue;
    }
    if (in_number)
      visit(std::optional<std::int64_t>(value));
    else if (ch == 'n')
      visit(std::optional<std::int64_t>());  // null
    value = 0;
    in_number = false;
  }
}

// One result's per-packet RTTs as read. It holds the stored text and decodes
// it while it is visited: decoding once into a vector would cost a page of
// rows an allocation and a pass each, and the rows a page keeps as XML
// (manager.rendered_rows_mb) are never decoded again.
class PacketRtts {
 public:
  explicit PacketRtts(std::string stored) : stored_(std::move(stored)) {}

  // Calls visit(std::optional<std::int64_t>) per packet in order: its RTT in
  // ns, nullopt when it was lost.
  template <typename Visit>
  void for_each(Visit&& visit) const {
    visit_rtts(stored_, std::forward<Visit>(visit));
  }

  // The column's text, for storage's own writers (the weekly dump copies it).
  const std::string& stored() const { return stored_; }

 private:
  std::string stored_;
};

}  // namespace flexmon
