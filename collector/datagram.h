// The collector's view of one result datagram, as a pure function of its
// bytes and the node keys: parse the outer frame, verify the seal, parse the
// body, and check that it is a well-formed result batch of the sealing node.
// The collector and the fuzz target (tests/fuzz/collector_datagram_fuzz.cpp)
// both call it, so what the fuzzer exercises is what the collector runs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/seal.h"
#include "wire.pb.h"

namespace flexmon {

// Why a datagram was dropped; each reason has its own collector counter.
enum class DatagramReject {
  none,
  malformed,     // not a Sealed frame, or another wire version
  unknown_node,  // no key for the frame's node
  unknown_key,   // the node has no key of the frame's key id
  retired_key,   // sealed under a key the config marks retired
  bad_seal,      // the MAC does not verify, or the body names another node
  not_results,   // a sealed message of another kind
  bad_results,   // epoch 0, no results, seq 0, or a result of another src
};

struct DecodedDatagram {
  DatagramReject reject = DatagramReject::none;
  std::string why;  // for the log when rejected; outside bytes escaped
  // The key that verified the datagram: its acks are sealed under it, which
  // the prober holds whatever the rotation step. Set iff reject == none.
  const Sealer* key = nullptr;
  // The batch lives on an arena of its own: it is parsed on the receiver and
  // freed on the syncer, and one arena costs a few allocations where the
  // batch's strings and submessages cost ~50 (a third of the receiver's work).
  std::unique_ptr<google::protobuf::Arena> arena;
  wire::Message* message = nullptr;  // on `arena`; set iff reject == none
};

// Never throws on any input; `why` is bounded in length.
DecodedDatagram decode_result_datagram(std::string_view datagram, const KeyRing& keys);

}  // namespace flexmon
