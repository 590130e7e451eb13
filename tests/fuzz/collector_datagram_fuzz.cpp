// libFuzzer target: the collector's datagram decoder (collector/datagram.h),
// the function the collector runs on every datagram it receives. Two modes,
// chosen by bit 0 of the first byte: the raw datagram, or the rest sealed
// properly as the body of a frame under the key bits 1-2 choose
// (fuzz_keys.h: n1's two active keys, n2's active and retired ones), so the
// checks behind a valid seal (key id, message kind, epoch, seq, src) see
// arbitrary bytes too. Accepted batches then go through the seq window the
// collector keeps (collector/window.h).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "collector/datagram.h"
#include "storage/seq_window.h"
#include "fuzz_keys.h"
#include "wire.pb.h"

using flexmon::fuzz::keys;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  flexmon::DecodedDatagram decoded;
  if (data[0] & 1) {
    const unsigned which = (data[0] >> 1) & 3;
    decoded = flexmon::decode_result_datagram(flexmon::fuzz::sealed_by(which, input), keys());
    if (flexmon::fuzz::kFuzzKeys[which].retired &&
        decoded.reject != flexmon::DatagramReject::retired_key &&
        decoded.reject != flexmon::DatagramReject::malformed)
      __builtin_trap();  // a retired key's frame is refused as such, whatever the body
  } else {
    decoded = flexmon::decode_result_datagram(input, keys());
  }
  if (decoded.reject != flexmon::DatagramReject::none) {
    if (decoded.message || decoded.key) __builtin_trap();  // a rejected datagram carries neither
    return 0;
  }
  if (!decoded.key) __builtin_trap();  // its acks are sealed under it
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
