// The HTTP request reader: complete, split, pipelined, limited and malformed
// requests, as a connection would deliver them.
#include "common/http_request.h"

#include <malloc.h>

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

TEST(HttpRequest, Http10Closes) {
  auto old = feed("POST /RPC2 HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", 100);
  ASSERT_EQ(old.size(), 1u);
  EXPECT_FALSE(std::get<Request>(old[0]).keep_alive);
}

// schemas/xmlrpc-api.md has always said chunked bodies are refused; they
// were joined and answered. Any Transfer-Encoding, and a POST with no
// Content-Length, now get 411 as soon as the header is read.
TEST(HttpRequest, TransferEncodingAndMissingLengthAreRefusedWith411) {
  for (const std::string& bytes :
       {std::string(
            "POST /RPC2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        std::string("POST /RPC2 HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),

        std::string("POST /RPC2 HTTP/1.1\r\nHost: x\r\n\r\n")}) {
    for (std::size_t piece : {1u, 3u, 1000u}) {
      auto steps = feed(bytes, piece);
      ASSERT_EQ(steps.size(), 1u) << bytes;
      const auto* refusal = std::get_if<Refusal>(&steps[0]);
      ASSERT_NE(refusal, nullptr) << bytes;
      EXPECT_EQ(refusal->status, 411) << bytes;
      EXPECT_NE(refusal->detail, "");
    }
  }
}

// A header that announces the largest body allowed costs nothing until the
// body comes: the body grows with the bytes received.
TEST(HttpRequest, BodyIsAllocatedAsItArrivesNotAsAnnounced) {
  const auto allocated = [] {
    const auto info = mallinfo2();
    return info.uordblks + info.hblkhd;
  };
  const auto before = allocated();
  RequestReader reader({.max_header_bytes = 256, .max_body_bytes = 1 << 30});
  std::string head = "POST /RPC2 HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\n0123456789";
  std::string_view unread(head);
  EXPECT_TRUE(std::holds_alternative<NeedMore>(reader.read(unread)));
  EXPECT_TRUE(reader.in_request());
  EXPECT_TRUE(unread.empty());
  EXPECT_LT(allocated() - before, std::size_t{1} << 20);
}

TEST(HttpRequest, ExpectContinueIsSignalledOnceTheHeaderPasses) {
  RequestReader reader(limits());
  std::string head = "POST /RPC2 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
  std::string_view unread(head);
  EXPECT_TRUE(std::holds_alternative<NeedMore>(reader.read(unread)));
  EXPECT_TRUE(reader.take_continue());
  EXPECT_FALSE(reader.take_continue());
  std::string body = "hello";
  std::string_view rest(body);
  EXPECT_EQ(std::get<Request>(reader.read(rest)).body, "hello");
  // Refused headers get no 100 Continue.
  RequestReader refusing(limits());
  std::string big = "POST /RPC2 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 65\r\n\r\n";
  std::string_view big_view(big);
  EXPECT_TRUE(std::holds_alternative<Refusal>(refusing.read(big_view)));
  EXPECT_FALSE(refusing.take_continue());
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

TEST(HttpRequest, LongBodyIsRefusedWith413AsSoonAsTheHeaderSaysSo) {
  auto declared = feed("POST /RPC2 HTTP/1.1\r\nContent-Length: 65\r\n\r\n", 100);
  ASSERT_EQ(declared.size(), 1u);
  EXPECT_EQ(std::get<Refusal>(declared[0]).status, 413);
}

TEST(HttpRequest, MalformedRequestsAreRefusedWith400AndTheConnectionStaysRefused) {
  for (const std::string& bytes :
       {std::string("GARBAGE\r\n\r\n"),
        std::string("POST /RPC2 HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
        std::string("POST /RPC2 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        std::string("POST /RPC2 HTTP/1.1\r\nno colon here\r\n\r\n"),
        // Both framings at once: the request-smuggling shape.
        std::string(
            "POST /RPC2 HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")}) {
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
