// libFuzzer target: the bytes an XML-RPC client sends the manager, read by
// common/http_request.h. The first byte picks how the stream is split into
// receives, so the fuzzer also reaches requests cut at every point (the
// trickle); whatever comes in, each step is a request within the limits
// framed by Content-Length, a refusal, or a wait. The corpus holds the
// hostile cases of issue 14: oversized, chunked, Content-Length with
// Transfer-Encoding, no length, entity bombs, long headers, nothing at all.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "common/http_request.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t piece = 1 + data[0] % 64;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  const flexmon::http::RequestLimits limits{.max_header_bytes = 512, .max_body_bytes = 1024};
  flexmon::http::RequestReader reader(limits);
  std::string buffer;
  for (std::size_t at = 0; at < stream.size(); at += piece) {
    buffer.append(stream.substr(at, piece));
    for (;;) {
      std::string_view unread(buffer);
      const std::size_t before = unread.size();
      auto step = reader.read(unread);
      if (unread.size() > before) std::abort();
      buffer.erase(0, before - unread.size());
      if (std::holds_alternative<flexmon::http::NeedMore>(step)) break;
      if (auto* refusal = std::get_if<flexmon::http::Refusal>(&step)) {
        if (refusal->status < 400 || refusal->status > 499 || refusal->detail.empty()) std::abort();
        return 0;
      }
      const auto& request = std::get<flexmon::http::Request>(step);
      if (request.body.size() > limits.max_body_bytes) std::abort();
      // A returned request ends the reader's request: the next starts afresh.
      if (reader.in_request()) std::abort();
    }
    // What stays unconsumed is bounded: at most one incomplete header.
    if (buffer.size() > limits.max_header_bytes) std::abort();
  }
  return 0;
}
