// recv_timestamped on real loopback sockets: payload, sender, kernel stamp,
// an empty queue, and a pending ICMP error.
#include "prober/timestamped_socket.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cstring>

namespace flexmon::prober {
namespace {

struct UdpSocket {
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in address{};
  UdpSocket() {
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    socklen_t length = sizeof address;
    EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  }
  ~UdpSocket() { ::close(fd); }
  void send_to(const UdpSocket& peer, const std::string& payload) const {
    ASSERT_EQ(::sendto(fd, payload.data(), payload.size(), 0,
                       reinterpret_cast<const sockaddr*>(&peer.address), sizeof peer.address),
              static_cast<ssize_t>(payload.size()));
  }
  void wait_readable() const {
    pollfd p{fd, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
  }
};

std::int64_t realtime_ns() {
  timespec t{};
  clock_gettime(CLOCK_REALTIME, &t);
  return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
}

TEST(TimestampedSocket, ReturnsPayloadSenderAndKernelStamp) {
  UdpSocket receiver, sender;
  ASSERT_TRUE(enable_rx_timestamps(receiver.fd));
  std::int64_t before = realtime_ns();
  sender.send_to(receiver, "hello");
  receiver.wait_readable();
  std::array<std::uint8_t, 64> buffer{};
  auto received = recv_timestamped(receiver.fd, buffer);
  // Right after enabling, the kernel may stamp at the read rather than on
  // arrival (net_enable_timestamp is deferred): no later than the read, then.
  std::int64_t after = realtime_ns();
  ASSERT_TRUE(received) << received.error().message;
  ASSERT_TRUE(received->has_value());
  const Datagram& d = **received;
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buffer.data()), d.bytes), "hello");
  ASSERT_EQ(d.from.ss_family, AF_INET);
  EXPECT_EQ(d.from_length, sizeof(sockaddr_in));
  EXPECT_EQ(reinterpret_cast<const sockaddr_in&>(d.from).sin_port, sender.address.sin_port);
  EXPECT_TRUE(d.kernel_stamped);
  EXPECT_GE(d.rx_utc_ns, before);
  EXPECT_LE(d.rx_utc_ns, after);
}

TEST(TimestampedSocket, WithoutKernelStampsTakesTheTimeAtTheRead) {
  UdpSocket receiver, sender;
  sender.send_to(receiver, "x");
  receiver.wait_readable();
  std::int64_t before = realtime_ns();
  std::array<std::uint8_t, 64> buffer{};
  auto received = recv_timestamped(receiver.fd, buffer);
  ASSERT_TRUE(received && received->has_value());
  EXPECT_FALSE((*received)->kernel_stamped);
  EXPECT_GE((*received)->rx_utc_ns, before);
}

TEST(TimestampedSocket, EmptyQueueIsNoDatagramNotAnError) {
  UdpSocket receiver;
  std::array<std::uint8_t, 64> buffer{};
  auto received = recv_timestamped(receiver.fd, buffer);
  ASSERT_TRUE(received);
  EXPECT_FALSE(received->has_value());
}

TEST(TimestampedSocket, PendingIcmpErrorIsAnErrorNamingIt) {
  UdpSocket sender;
  int one = 1;
  ASSERT_EQ(setsockopt(sender.fd, SOL_IP, IP_RECVERR, &one, sizeof one), 0);
  sockaddr_in closed{};
  {
    UdpSocket gone;  // a port that was just free: nothing listens once closed
    closed = gone.address;
  }
  ASSERT_EQ(::sendto(sender.fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&closed), sizeof closed), 1);
  pollfd p{sender.fd, POLLERR, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  std::array<std::uint8_t, 64> buffer{};
  auto received = recv_timestamped(sender.fd, buffer);
  ASSERT_FALSE(received);
  EXPECT_NE(received.error().message.find("Connection refused"), std::string::npos)
      << received.error().message;
}

}  // namespace
}  // namespace flexmon::prober
