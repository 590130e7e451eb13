// The HTTP request reader: complete, split, pipelined, limited and malformed
// requests, as a connection would deliver them.
#include "common/http_request.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace flexmon::http {
namespace {

const std::string kCall =
    "POST /RPC2 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YTpi\r\nContent-Length: 5\r\n\r\n"
    "hello";

RequestLimits limits() { return {.max_header_bytes = 256, .max_body_bytes = 64}; }

// Feeds `bytes` in pieces of `piece` bytes, as recv() might, collecting every
// step that is not NeedMore.
std::vector<RequestReader::Step> feed(const std::string& bytes, std::size_t piece) {
  RequestReader reader(limits());
  std::vector<RequestReader::Step> steps;
  std::string buffer;
  for (std::size_t at = 0; at < bytes.size(); at += piece) {
    buffer += bytes.substr(at, piece);
    for (;;) {
      std::string_view unread(buffer);
      auto step = reader.read(unread);
      buffer.erase(0, buffer.size() - unread.size());
      if (std::holds_alternative<NeedMore>(step)) break;
      const bool refused = std::holds_alternative<Refusal>(step);
      steps.push_back(std::move(step));
      if (refused) return steps;
    }
  }
  return steps;
}

TEST(HttpRequest, ReadsACompleteRequest) {
  auto steps = feed(kCall, kCall.size());
  ASSERT_EQ(steps.size(), 1u);
  const auto& request = std::get<Request>(steps[0]);
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.target, "/RPC2");
  EXPECT_EQ(request.authorization, "Basic YTpi");
  EXPECT_EQ(request.body, "hello");
  EXPECT_TRUE(request.keep_alive);
}

TEST(HttpRequest, SameRequestWhateverHowTheBytesAreSplit) {
  for (std::size_t piece : {1u, 2u, 7u, 40u}) {
    auto steps = feed(kCall, piece);
    ASSERT_EQ(steps.size(), 1u) << piece;
    EXPECT_EQ(std::get<Request>(steps[0]).body, "hello") << piece;
  }
}

TEST(HttpRequest, PipelinedRequestsComeOutOneByOne) {
  const std::string second =
      "POST /other HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye";
  for (std::size_t piece : {1u, 1000u}) {
    auto steps = feed(kCall + second, piece);
    ASSERT_EQ(steps.size(), 2u) << piece;
    EXPECT_EQ(std::get<Request>(steps[0]).body, "hello");
    const auto& last = std::get<Request>(steps[1]);
    EXPECT_EQ(last.target, "/other");
    EXPECT_EQ(last.body, "bye");
    EXPECT_FALSE(last.keep_alive);
  }
}

TEST(HttpRequest, Http10ClosesAndChunkedBodiesAreJoined) {
  auto old = feed("POST /RPC2 HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", 100);
  ASSERT_EQ(old.size(), 1u);
  EXPECT_FALSE(std::get<Request>(old[0]).keep_alive);
  auto chunked = feed(
      "POST /RPC2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
      3);
  ASSERT_EQ(chunked.size(), 1u);
  EXPECT_EQ(std::get<Request>(chunked[0]).body, "abcde");
}

TEST(HttpRequest, LongHeaderIsRefusedWith431WhetherOrNotItEnds) {
  const std::string long_header = "POST /RPC2 HTTP/1.1\r\nX-Pad: " + std::string(400, 'a');
  for (const std::string& bytes : {long_header, long_header + "\r\nContent-Length: 0\r\n\r\n"}) {
    for (std::size_t piece : {1u, 5000u}) {
      auto steps = feed(bytes, piece);
      ASSERT_EQ(steps.size(), 1u);
      EXPECT_EQ(std::get<Refusal>(steps[0]).status, 431) << std::get<Refusal>(steps[0]).detail;
    }
  }
}

TEST(HttpRequest, LongBodyIsRefusedWith413) {
  auto declared = feed("POST /RPC2 HTTP/1.1\r\nContent-Length: 65\r\n\r\n", 100);
  ASSERT_EQ(declared.size(), 1u);
  EXPECT_EQ(std::get<Refusal>(declared[0]).status, 413);
  const std::string chunks = "POST /RPC2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" +
                             std::string(64, 'x') + "\r\n1\r\ny\r\n0\r\n\r\n";
  auto chunked = feed(chunks, 10);
  ASSERT_EQ(chunked.size(), 1u);
  EXPECT_EQ(std::get<Refusal>(chunked[0]).status, 413);
}

TEST(HttpRequest, MalformedRequestsAreRefusedWith400AndTheConnectionStaysRefused) {
  for (const std::string& bytes :
       {std::string("GARBAGE\r\n\r\n"),
        std::string("POST /RPC2 HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
        std::string("POST /RPC2 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        std::string("POST /RPC2 HTTP/1.1\r\nno colon here\r\n\r\n")}) {
    RequestReader reader(limits());
    std::string_view unread(bytes);
    auto step = reader.read(unread);
    ASSERT_TRUE(std::holds_alternative<Refusal>(step)) << bytes;
    EXPECT_EQ(std::get<Refusal>(step).status, 400) << bytes;
    EXPECT_NE(std::get<Refusal>(step).detail, "");
    std::string_view good(kCall);
    EXPECT_TRUE(std::holds_alternative<Refusal>(reader.read(good)));
  }
}

}  // namespace
}  // namespace flexmon::http
