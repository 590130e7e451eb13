#include "common/http_request.h"

#include <utility>

#include <fmt/format.h>
#include <boost/asio/buffer.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>

namespace flexmon::http {

namespace beast_http = boost::beast::http;

namespace {

// A body kept in a std::string that grows with the bytes that arrive.
// Beast's string_body reserves the whole Content-Length as soon as the
// header is read: a header that announces 1 MiB would cost 1 MiB before a
// byte of it came.
struct GrowingBody {
  using value_type = std::string;

  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(beast_http::header<isRequest, Fields>&, std::string& body) : body_(body) {}

    void init(const boost::optional<std::uint64_t>&, boost::system::error_code& error) {
      error = {};
    }

    template <class Buffers>
    std::size_t put(const Buffers& buffers, boost::system::error_code& error) {
      std::size_t taken = 0;
      for (auto piece : boost::beast::buffers_range_ref(buffers)) {
        body_.append(static_cast<const char*>(piece.data()), piece.size());
        taken += piece.size();
      }
      error = {};
      return taken;
    }

    void finish(boost::system::error_code& error) { error = {}; }

   private:
    std::string& body_;
  };
};

Refusal refusal_for(const boost::system::error_code& error, const RequestLimits& limits) {
  if (error == beast_http::error::header_limit)
    return {431, "Request Header Fields Too Large",
            fmt::format("request line and headers longer than {} bytes", limits.max_header_bytes)};
  if (error == beast_http::error::body_limit)
    return {413, "Content Too Large",
            fmt::format("body longer than {} bytes", limits.max_body_bytes)};
  return {400, "Bad Request", fmt::format("malformed HTTP request: {}", error.message())};
}

}  // namespace

struct RequestReader::Parser {
  beast_http::request_parser<GrowingBody> parser;
};

RequestReader::RequestReader(RequestLimits limits) : limits_(limits) {}

RequestReader::~RequestReader() = default;

bool RequestReader::in_request() const { return parser_ != nullptr; }

bool RequestReader::take_continue() { return std::exchange(continue_, false); }

std::optional<Refusal> RequestReader::check_header() {
  auto& parser = parser_->parser;
  const auto& header = parser.get();
  // Bodies are framed by Content-Length alone: a Transfer-Encoding (chunked
  // or any other) is refused, which also closes the request-smuggling gap
  // between a proxy that honours one framing and a server that honours the
  // other.
  if (header.find(beast_http::field::transfer_encoding) != header.end())
    return Refusal{411, "Length Required",
                   "Transfer-Encoding is not accepted: send the body with a Content-Length"};
  if (!parser.content_length() && header.method() != beast_http::verb::get &&
      header.method() != beast_http::verb::head)
    return Refusal{411, "Length Required", "the request has a body but no Content-Length"};
  return std::nullopt;
}

RequestReader::Step RequestReader::read(std::string_view& input) {
  if (broken_) return Refusal{400, "Bad Request", "the connection sent a bad request before"};
  if (!parser_) {
    if (input.empty()) return NeedMore{};
    parser_ = std::make_unique<Parser>();
    parser_->parser.header_limit(static_cast<std::uint32_t>(limits_.max_header_bytes));
    parser_->parser.body_limit(static_cast<std::uint64_t>(limits_.max_body_bytes));
    // The parser stops after the header, which is checked before any of the
    // body is taken; body bytes are then taken as they arrive, so the
    // caller's buffer stays small.
    parser_->parser.eager(false);
  }
  auto& parser = parser_->parser;
  while (!input.empty() && !parser.is_done()) {
    const bool had_header = parser.is_header_done();
    boost::system::error_code error;
    std::size_t used = parser.put(boost::asio::const_buffer(input.data(), input.size()), error);
    input.remove_prefix(used);
    if (error == beast_http::error::need_more) {
      // Beast parses an incomplete header again from its start once more
      // bytes come, and leaves it unconsumed meanwhile: bound what the
      // caller has to hold for it.
      if (input.size() > limits_.max_header_bytes) {
        broken_ = true;
        return refusal_for(beast_http::error::header_limit, limits_);
      }
      if (used == 0) break;
      continue;
    }
    if (error) {
      broken_ = true;
      return refusal_for(error, limits_);
    }
    if (!had_header && parser.is_header_done()) {
      if (auto refusal = check_header()) {
        broken_ = true;
        return *refusal;
      }
      parser.eager(true);
      const auto& header = parser.get();
      if (auto expect = header.find(beast_http::field::expect); expect != header.end())
        continue_ = boost::beast::iequals(expect->value(), "100-continue") && !parser.is_done();
    }
  }
  if (!parser.is_done()) return NeedMore{};

  auto& message = parser.get();
  Request request;
  request.method = std::string(message.method_string());
  request.target = std::string(message.target());
  if (auto found = message.find(beast_http::field::authorization); found != message.end())
    request.authorization = std::string(found->value());
  request.keep_alive = message.keep_alive();
  request.body = std::move(message.body());
  parser_.reset();
  continue_ = false;
  return request;
}

}  // namespace flexmon::http
