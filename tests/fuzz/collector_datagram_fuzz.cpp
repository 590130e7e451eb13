// libFuzzer target: the collector's datagram decoder (collector/datagram.h),
// the function the collector runs on every datagram it receives. Two modes,
// chosen by the first byte: the raw datagram, or the rest sealed properly as
// the body of node n1's frame, so the checks behind a valid seal (message
// kind, epoch, seq, src) see arbitrary bytes too. Accepted batches then go
// through the seq window the collector keeps (collector/window.h).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "collector/datagram.h"
#include "collector/window.h"
#include "fuzz_keys.h"
#include "wire.pb.h"

using flexmon::fuzz::keys;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  flexmon::DecodedDatagram decoded;
  if (data[0] & 1) {
    decoded = flexmon::decode_result_datagram(flexmon::fuzz::sealed_by_n1(input), keys());
  } else {
    decoded = flexmon::decode_result_datagram(input, keys());
  }
  if (decoded.reject != flexmon::DatagramReject::none) {
    if (decoded.message) __builtin_trap();  // a rejected datagram carries no message
    return 0;
  }
  const auto& batch = decoded.message->results();
  if (batch.boot_epoch() == 0 || batch.results_size() == 0) __builtin_trap();
  flexmon::SeqWindow window;
  for (const auto& r : batch.results()) {
    if (r.seq() == 0 || r.src() != decoded.message->node()) __builtin_trap();
    if (window.classify(r.seq()) == flexmon::SeqWindow::Verdict::fresh) window.add(r.seq());
  }
  flexmon::SeqWindow back;
  if (!flexmon::SeqWindow::decode(window.high_water(), window.encode_above(), back) ||
      back.above() != window.above())
    __builtin_trap();
  return 0;
}
