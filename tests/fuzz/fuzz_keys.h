// What the fuzz targets that open frames share: the key ring of nodes n1 and
// n2 in the middle of key rotations (n1: keys 1 and 2 active; n2: key 2
// active, key 1 retired), and frames sealed properly around fuzzed bytes
// under each of those keys, so the checks behind a valid seal see arbitrary
// bodies too, and a retired key's frames reach the retired_key refusal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/seal.h"
#include "wire.pb.h"

namespace flexmon::fuzz {

struct FuzzKey {
  const char* node;
  std::uint32_t id;
  char fill;  // the key is 32 bytes of this
  bool retired;
};

inline constexpr FuzzKey kFuzzKeys[] = {
    {"n1", 1, '\x11', false},
    {"n1", 2, '\x12', false},
    {"n2", 2, '\x22', false},
    {"n2", 1, '\x21', true},
};

inline const KeyRing& keys() {
  static const KeyRing ring = [] {
    KeyRing r;
    for (const auto& k : kFuzzKeys) r.add(k.node, std::string(32, k.fill), k.id, k.retired);
    return r;
  }();
  return ring;
}

// The serialized frame whose body is `body`, with a valid MAC under
// kFuzzKeys[which % 4].
inline std::string sealed_by(unsigned which, std::string_view body) {
  const FuzzKey& k = kFuzzKeys[which % 4];
  wire::Sealed frame;
  frame.set_version(kWireVersion);
  frame.set_node(k.node);
  frame.set_key_id(k.id);
  frame.set_body(std::string(body));
  auto mac = Sealer(std::string(32, k.fill), k.id).mac(frame.body());
  frame.set_mac(mac.data(), mac.size());
  return frame.SerializeAsString();
}

}  // namespace flexmon::fuzz
