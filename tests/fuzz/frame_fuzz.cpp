// libFuzzer target: opening a frame from outside (datagram or control
// message). Two modes, chosen by the first byte, so the fuzzer reaches both the
// outer checks and, with a valid seal, the body parser behind them.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/seal.h"
#include "fuzz_keys.h"

using flexmon::fuzz::keys;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    // The rest is a body: seal it properly, so the parser of a verified body
    // and the node-binding check see arbitrary bytes.
    (void)keys().open(flexmon::fuzz::sealed_by_n1(input));
  } else {
    (void)keys().open(input);
    (void)flexmon::open_hello(input);
  }
  return 0;
}
