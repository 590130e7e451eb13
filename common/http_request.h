// Reading HTTP/1.1 requests off a connection for an RPC endpoint. The bytes
// come from anyone who can connect, so parsing is Boost.Beast's parser under
// explicit limits; this header keeps Beast out of the callers.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace flexmon::http {

// One complete request.
struct Request {
  std::string method;         // "POST"
  std::string target;         // "/RPC2"
  std::string authorization;  // the Authorization header's value; empty when absent
  std::string body;
  bool keep_alive = false;  // HTTP/1.1 default, or what the Connection header says
};

// A request that cannot be served: the status to answer with (the
// connection is then closed) and what was wrong, for the log. Bodies must
// come with a Content-Length: a Transfer-Encoding (chunked included), or a
// POST without a length, is refused with 411. A body is never allocated
// ahead of its bytes: a large Content-Length costs nothing until it arrives.
struct Refusal {
  int status = 400;
  std::string reason;  // the status line's text: "Request Header Fields Too Large"
  std::string detail;  // "header of more than 4096 bytes"
};

// The current request is not complete yet: receive more bytes.
struct NeedMore {};

struct RequestLimits {
  std::size_t max_header_bytes = 4096;  // request line and headers
  std::size_t max_body_bytes = 1 << 20;
};

// Reads requests one after another out of a connection's byte stream
// (pipelined requests included). Feed it the bytes received so far.
class RequestReader {
 public:
  explicit RequestReader(RequestLimits limits);
  ~RequestReader();
  RequestReader(const RequestReader&) = delete;
  RequestReader& operator=(const RequestReader&) = delete;

  using Step = std::variant<NeedMore, Request, Refusal>;

  // Parses from the front of `input` and drops from it what was consumed.
  // Bytes of a header not yet complete are not consumed: call again with
  // them and more. After a Request the reader starts on the next request;
  // after a Refusal the connection's stream cannot be trusted and the reader
  // refuses everything.
  Step read(std::string_view& input);

  // True from a request's first byte until it is returned: the transport's
  // request deadline runs while this holds.
  bool in_request() const;

  // True once for a request whose header passed its checks and asked for
  // "Expect: 100-continue": the caller sends "100 Continue" and the client
  // then sends its body (curl waits a second for it otherwise).
  bool take_continue();

 private:
  std::optional<Refusal> check_header();

  struct Parser;
  RequestLimits limits_;
  std::unique_ptr<Parser> parser_;
  bool broken_ = false;
  bool continue_ = false;
};

}  // namespace flexmon::http
