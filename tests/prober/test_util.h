// Helpers for prober tests: bounded waits (never timed assertions), temporary
// folders, and a UDP socket on loopback that plays a collector or a silent peer.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>

namespace flexmon::test {

// Polls `done` until it holds or `limit` passes; the result of the last poll.
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

// A fresh folder under the system temp folder, removed at destruction.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::random_device random;
    path = std::filesystem::temp_directory_path() /
           ("flexmon-test-" + std::to_string(random()) + std::to_string(random()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

// Binds the socket fd to a port on 127.0.0.1 the kernel chooses; that port.
inline std::uint16_t bind_loopback(int fd) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

// A UDP socket bound to a loopback port the kernel chose, closed at destruction.
struct LoopbackUdpSocket {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  std::uint16_t port = bind_loopback(fd);
  LoopbackUdpSocket() = default;
  ~LoopbackUdpSocket() { close(fd); }
  LoopbackUdpSocket(const LoopbackUdpSocket&) = delete;
  LoopbackUdpSocket& operator=(const LoopbackUdpSocket&) = delete;

  // The next datagram within 10 s, and where it came from.
  std::optional<std::pair<std::string, sockaddr_in>> receive() {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10'000) != 1) return std::nullopt;
    char buffer[65536];
    sockaddr_in from{};
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(fd, buffer, sizeof buffer, 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 0) return std::nullopt;
    return std::make_pair(std::string(buffer, static_cast<std::size_t>(n)), from);
  }

  void send(const std::string& frame, const sockaddr_in& to) {
    sendto(fd, frame.data(), frame.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  }
};

}  // namespace flexmon::test
