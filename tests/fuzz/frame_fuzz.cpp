// libFuzzer target: opening a frame from outside (datagram or control
// message). Two modes, chosen by the first byte, so the fuzzer reaches both the
// outer checks and, with a valid seal, the body parser behind them.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/seal.h"
#include "wire.pb.h"

namespace {

const flexmon::KeyRing& keys() {
  static const flexmon::KeyRing ring = [] {
    flexmon::KeyRing r;
    r.add("n1", std::string(32, '\x11'));
    r.add("n2", std::string(32, '\x22'));
    return r;
  }();
  return ring;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    // The rest is a body: seal it properly, so the parser of a verified body
    // and the node-binding check see arbitrary bytes.
    flexmon::wire::Sealed frame;
    frame.set_version(flexmon::kWireVersion);
    frame.set_node("n1");
    frame.set_body(std::string(input));
    auto mac = keys().find("n1")->mac(frame.body());
    frame.set_mac(mac.data(), mac.size());
    (void)keys().open(frame.SerializeAsString());
  } else {
    (void)keys().open(input);
    (void)flexmon::open_hello(input);
  }
  return 0;
}
