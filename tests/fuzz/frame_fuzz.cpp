// libFuzzer target: opening a frame from outside (datagram or control
// message). The first byte chooses the mode, so the fuzzer reaches both the
// outer checks and, with a valid seal, the body parser behind them: bit 0
// clear, the rest is a raw frame; set, the rest is a body sealed properly
// under the key that bits 1-2 choose (fuzz_keys.h: two active keys of n1,
// n2's active key and its retired one).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/seal.h"
#include "fuzz_keys.h"

using flexmon::fuzz::keys;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  flexmon::wire::Message message;
  if (data[0] & 1) {
    const unsigned which = (data[0] >> 1) & 3;
    auto opened = keys().open(flexmon::fuzz::sealed_by(which, input), message);
    // A retired key opens nothing, whatever the body.
    if (flexmon::fuzz::kFuzzKeys[which].retired && opened.ok()) __builtin_trap();
    if (opened.ok() && opened.key->id() != flexmon::fuzz::kFuzzKeys[which].id) __builtin_trap();
  } else {
    auto opened = keys().open(input, message);
    if (opened.ok() != (opened.key != nullptr)) __builtin_trap();
    (void)flexmon::open_hello(input);
  }
  return 0;
}
