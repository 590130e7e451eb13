#include "collector/datagram.h"

#include <fmt/format.h>

namespace flexmon {

DecodedDatagram decode_result_datagram(std::string_view datagram, const KeyRing& keys) {
  DecodedDatagram out;
  wire::Sealed frame;
  if (datagram.size() > static_cast<std::size_t>(INT32_MAX) ||
      !frame.ParseFromArray(datagram.data(), static_cast<int>(datagram.size())) ||
      frame.version() != kWireVersion) {
    out.reject = DatagramReject::malformed;
    out.why = fmt::format("malformed datagram ({} bytes)", datagram.size());
    return out;
  }
  if (!keys.find(frame.node())) {
    out.reject = DatagramReject::unknown_node;
    out.why = fmt::format("unknown node '{}'", frame.node().substr(0, 64));
    return out;
  }
  auto message = keys.open(datagram);
  if (!message) {
    out.reject = DatagramReject::bad_seal;
    out.why = message.error().message.substr(0, 200);
    return out;
  }
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
      out.why = fmt::format("result {} has src '{}'", r.seq(), r.src().substr(0, 64));
    else if (r.seq() == 0)
      out.why = "a result has seq 0";
  }
  if (!out.why.empty()) {
    out.reject = DatagramReject::bad_results;
    out.why = fmt::format("node '{}': {}", message->node(), out.why);
    return out;
  }
  out.message = std::move(*message);
  return out;
}

}  // namespace flexmon
