#include "collector/datagram.h"

#include <fmt/format.h>

#include "common/log.h"

namespace flexmon {

DecodedDatagram decode_result_datagram(std::string_view datagram, const KeyRing& keys) {
  DecodedDatagram out;
  if (datagram.size() > static_cast<std::size_t>(INT32_MAX)) {
    out.reject = DatagramReject::malformed;
    out.why = fmt::format("malformed datagram ({} bytes)", datagram.size());
    return out;
  }
  google::protobuf::ArenaOptions sizes;
  // One block holds a full datagram's batch (~1.4 KB on the wire, ~6 KB parsed).
  sizes.start_block_size = 8192;
  out.arena = std::make_unique<google::protobuf::Arena>(sizes);
  auto opened = keys.open_on(datagram, *out.arena);
  switch (opened.fault) {
    case OpenFault::none:
      break;
    case OpenFault::malformed:
      out.reject = DatagramReject::malformed;
      out.why = opened.why.substr(0, 200);
      return out;
    case OpenFault::unknown_node:
      out.reject = DatagramReject::unknown_node;
      out.why = std::move(opened.why);
      return out;
    case OpenFault::unknown_key:
      out.reject = DatagramReject::unknown_key;
      out.why = std::move(opened.why);
      return out;
    case OpenFault::retired_key:
      out.reject = DatagramReject::retired_key;
      out.why = std::move(opened.why);
      return out;
    case OpenFault::bad_seal:
      out.reject = DatagramReject::bad_seal;
      out.why = opened.why.substr(0, 200);
      return out;
  }
  const wire::Message* message = opened.message;
  if (!message->has_results()) {
    out.reject = DatagramReject::not_results;
    out.why = fmt::format("node '{}': not a result batch", message->node());
    return out;
  }
  const auto& batch = message->results();
  if (batch.boot_epoch() == 0)
    out.why = "boot epoch 0";
  else if (batch.results_size() == 0)
    out.why = "no results";
  for (const auto& r : batch.results()) {
    if (!out.why.empty()) break;
    if (r.src() != message->node())
      out.why = fmt::format("result {} has src '{}'", r.seq(), escaped(r.src(), 64));
    else if (r.seq() == 0)
      out.why = "a result has seq 0";
  }
  if (!out.why.empty()) {
    out.reject = DatagramReject::bad_results;
    out.why = fmt::format("node '{}': {}", message->node(), out.why);
    return out;
  }
  out.message = opened.message;
  out.key = opened.key;
  return out;
}

}  // namespace flexmon
