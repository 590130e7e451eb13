#include "common/http_request.h"

#include <fmt/format.h>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

namespace flexmon::http {

namespace beast_http = boost::beast::http;

struct RequestReader::Parser {
  beast_http::request_parser<beast_http::string_body> parser;
};

RequestReader::RequestReader(RequestLimits limits) : limits_(limits) {}

RequestReader::~RequestReader() = default;

namespace {

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

RequestReader::Step RequestReader::read(std::string_view& input) {
  if (broken_) return Refusal{400, "Bad Request", "the connection sent a bad request before"};
  if (!parser_) {
    parser_ = std::make_unique<Parser>();
    parser_->parser.header_limit(static_cast<std::uint32_t>(limits_.max_header_bytes));
    parser_->parser.body_limit(static_cast<std::uint64_t>(limits_.max_body_bytes));
    // Body bytes are taken as they arrive, so the caller's buffer stays small.
    parser_->parser.eager(true);
  }
  auto& parser = parser_->parser;
  while (!input.empty() && !parser.is_done()) {
    boost::system::error_code error;
    std::size_t used = parser.put(boost::asio::const_buffer(input.data(), input.size()), error);
    input.remove_prefix(used);
    if (error == beast_http::error::need_more) {
      // Beast parses an incomplete header (or chunk header) again from its
      // start once more bytes come, and leaves it unconsumed meanwhile: bound
      // what the caller has to hold for it.
      if (input.size() > limits_.max_header_bytes) {
        broken_ = true;
        if (!parser.is_header_done()) return refusal_for(beast_http::error::header_limit, limits_);
        return Refusal{400, "Bad Request",
                       fmt::format("chunk header longer than {} bytes", limits_.max_header_bytes)};
      }
      if (used == 0) break;
      continue;
    }
    if (error) {
      broken_ = true;
      return refusal_for(error, limits_);
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
  return request;
}

}  // namespace flexmon::http
