// Raw HTTP/1.1 to the manager on loopback, the bytes a client sends and
// receives without a client library: for the manager's tests and benchmarks.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>

namespace flexmon::manager::testing {

// A TCP connection to 127.0.0.1:port; -1, with errno saying why, when there is none.
inline int dial_loopback(std::uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    const int why = errno;
    close(fd);
    errno = why;
    return -1;
  }
  return fd;
}

// Every byte the peer sends on fd until it ends the connection.
inline std::string read_until_closed(int fd) {
  std::string out;
  char buffer[65536];
  for (ssize_t n; (n = read(fd, buffer, sizeof buffer)) > 0;)
    out.append(buffer, static_cast<std::size_t>(n));
  return out;
}

// One XML-RPC call on the connection fd, which it closes; the whole response
// (status line, headers, body). `auth` is the Authorization header, none when
// empty. One call per connection: without "Connection: close" the server
// keeps it open for the next call until http_timeout_s.
inline std::string post_xmlrpc(int fd, const std::string& auth, const std::string& body) {
  std::string request =
      "POST /RPC2 HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: text/xml\r\n";
  if (!auth.empty()) request += "Authorization: " + auth + "\r\n";
  request += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  (void)send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string response = read_until_closed(fd);
  close(fd);
  return response;
}

}  // namespace flexmon::manager::testing
