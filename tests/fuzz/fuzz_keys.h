// What the fuzz targets that open frames share: the key ring of nodes n1 and
// n2, and node n1's frame sealed properly around fuzzed bytes, so the checks
// behind a valid seal see arbitrary bodies too.
#pragma once

#include <string>
#include <string_view>

#include "common/seal.h"
#include "wire.pb.h"

namespace flexmon::fuzz {

inline const KeyRing& keys() {
  static const KeyRing ring = [] {
    KeyRing r;
    r.add("n1", std::string(32, '\x11'));
    r.add("n2", std::string(32, '\x22'));
    return r;
  }();
  return ring;
}

// The serialized frame of node n1 whose body is `body`, with a valid MAC.
inline std::string sealed_by_n1(std::string_view body) {
  wire::Sealed frame;
  frame.set_version(kWireVersion);
  frame.set_node("n1");
  frame.set_body(std::string(body));
  auto mac = keys().find("n1")->mac(frame.body());
  frame.set_mac(mac.data(), mac.size());
  return frame.SerializeAsString();
}

}  // namespace flexmon::fuzz
