// A peer of the gateway written the way an attacker or a broken client would be: blocking
// sockets, bytes by hand. For tests that must send what no Stella component ever sends (a 4 GiB
// length prefix, half a ClientHello) or behave as no Stella component does (stop reading).
// Run it off the gateway's loop (TestLoop::RunOffLoop); every socket call times out.
#ifndef STELLA_TESTS_SUPPORT_BLOCKING_PEER_H_
#define STELLA_TESTS_SUPPORT_BLOCKING_PEER_H_

#include <openssl/base.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "google/protobuf/message_lite.h"
#include "runtime/frame_codec.h"
#include "runtime/tls/cert_builder.h"

namespace stella::testing {

// A TCP connection to 127.0.0.1:`port` whose sends and receives time out after `timeout_ms`;
// -1 if it cannot connect.
int ConnectLoopback(std::uint16_t port, int timeout_ms = 10000);

// Reads from `fd` until EOF, an error or the socket timeout; true if it ended in EOF or a reset
// (the other side closed), false on timeout.
bool WaitForClose(int fd);

// A frame as it arrived.
struct RawFrame {
  runtime::FrameType type;
  std::uint16_t flags = 0;
  runtime::CorrelationId id{};
  std::string payload;
};

// A mutual-TLS client (BoringSSL, ALPN stella/1) over a blocking socket.
class BlockingTlsPeer {
 public:
  // Connects to 127.0.0.1:`port` and completes the handshake presenting `cert` and trusting
  // `root`. nullptr and `*error` set if either fails.
  static std::unique_ptr<BlockingTlsPeer> Connect(std::uint16_t port,
                                                  const runtime::tls::MintedCert& cert,
                                                  const runtime::tls::MintedCert& root,
                                                  std::string* error, int timeout_ms = 10000);
  ~BlockingTlsPeer();
  BlockingTlsPeer(const BlockingTlsPeer&) = delete;
  BlockingTlsPeer& operator=(const BlockingTlsPeer&) = delete;

  // Writes bytes as they are, encrypted. False if the connection failed.
  bool WriteRaw(std::string_view bytes);
  // Encodes and writes one frame (payload up to 16 MiB).
  bool WriteFrame(runtime::FrameType type, std::uint16_t flags, const runtime::CorrelationId& id,
                  const google::protobuf::MessageLite& payload);
  // The next frame, or std::nullopt when the connection closed, failed or timed out first.
  std::optional<RawFrame> ReadFrame();
  // Reads and drops frames until the connection closes; true if it closed before the timeout.
  bool WaitForClose();

 private:
  BlockingTlsPeer(int fd, bssl::UniquePtr<SSL_CTX> ctx, bssl::UniquePtr<SSL> ssl);

  int fd_;
  bssl::UniquePtr<SSL_CTX> ctx_;
  bssl::UniquePtr<SSL> ssl_;
  runtime::FrameDecoder decoder_{std::uint32_t{16} << 20};
};

}  // namespace stella::testing

#endif  // STELLA_TESTS_SUPPORT_BLOCKING_PEER_H_
