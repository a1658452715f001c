#include "tests/support/blocking_peer.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

// clang-format off
#include "runtime/boringssl.h"  // first among OpenSSL-API headers: refuses OpenSSL 3
// clang-format on

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <array>
#include <cerrno>

namespace stella::testing {

int ConnectLoopback(std::uint16_t port, int timeout_ms) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  timeval timeout{};
  timeout.tv_sec = timeout_ms / 1000;
  timeout.tv_usec = static_cast<suseconds_t>(timeout_ms % 1000) * 1000;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool WaitForClose(int fd) {
  std::array<char, 4096> buffer{};
  while (true) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n == 0) {
      return true;
    }
    if (n < 0) {
      return errno == ECONNRESET;
    }
  }
}

std::unique_ptr<BlockingTlsPeer> BlockingTlsPeer::Connect(std::uint16_t port,
                                                          const runtime::tls::MintedCert& cert,
                                                          const runtime::tls::MintedCert& root,
                                                          std::string* error, int timeout_ms) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  static constexpr std::uint8_t kAlpn[] = {8, 's', 't', 'e', 'l', 'l', 'a', '/', '1'};
  if (ctx == nullptr || !SSL_CTX_use_certificate(ctx.get(), cert.cert.get()) ||
      !SSL_CTX_use_PrivateKey(ctx.get(), cert.key.get()) ||
      !X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), root.cert.get()) ||
      SSL_CTX_set_alpn_protos(ctx.get(), kAlpn, sizeof(kAlpn)) != 0) {
    *error = "cannot configure the client";
    return nullptr;
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  const int fd = ConnectLoopback(port, timeout_ms);
  if (fd < 0) {
    *error = "cannot connect";
    return nullptr;
  }
  bssl::UniquePtr<SSL> ssl(SSL_new(ctx.get()));
  SSL_set_fd(ssl.get(), fd);
  SSL_set_tlsext_host_name(ssl.get(), "localhost");
  ERR_clear_error();
  if (SSL_connect(ssl.get()) != 1) {
    const std::uint32_t packed = ERR_peek_last_error();
    *error = packed == 0 ? "handshake failed" : ERR_reason_error_string(packed);
    ERR_clear_error();
    ::close(fd);
    return nullptr;
  }
  return std::unique_ptr<BlockingTlsPeer>(new BlockingTlsPeer(fd, std::move(ctx), std::move(ssl)));
}

BlockingTlsPeer::BlockingTlsPeer(int fd, bssl::UniquePtr<SSL_CTX> ctx, bssl::UniquePtr<SSL> ssl)
    : fd_(fd), ctx_(std::move(ctx)), ssl_(std::move(ssl)) {}

BlockingTlsPeer::~BlockingTlsPeer() {
  ssl_.reset();
  ::close(fd_);
}

bool BlockingTlsPeer::WriteRaw(std::string_view bytes) {
  while (!bytes.empty()) {
    const int n = SSL_write(ssl_.get(), bytes.data(), static_cast<int>(bytes.size()));
    if (n <= 0) {
      ERR_clear_error();
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool BlockingTlsPeer::WriteFrame(runtime::FrameType type, std::uint16_t flags,
                                 const runtime::CorrelationId& id,
                                 const google::protobuf::MessageLite& payload) {
  std::string frame;
  if (!runtime::AppendFrame(type, flags, id, payload, std::uint32_t{16} << 20, &frame).ok()) {
    return false;
  }
  return WriteRaw(frame);
}

std::optional<RawFrame> BlockingTlsPeer::ReadFrame() {
  while (true) {
    absl::StatusOr<std::optional<runtime::FrameView>> next = decoder_.Next();
    if (!next.ok()) {
      return std::nullopt;
    }
    if (next->has_value()) {
      const runtime::FrameView& view = **next;
      return RawFrame{view.header.type, view.header.flags, view.header.correlation_id,
                      std::string(view.payload.begin(), view.payload.end())};
    }
    std::span<std::uint8_t> room = decoder_.PrepareWrite(std::size_t{16} * 1024);
    const int n = SSL_read(ssl_.get(), room.data(), static_cast<int>(room.size()));
    if (n <= 0) {
      ERR_clear_error();
      return std::nullopt;
    }
    decoder_.CommitWrite(static_cast<std::size_t>(n));
  }
}

bool BlockingTlsPeer::WaitForClose() {
  std::array<char, std::size_t{16} * 1024> buffer{};
  while (true) {
    const int n = SSL_read(ssl_.get(), buffer.data(), static_cast<int>(buffer.size()));
    if (n > 0) {
      continue;
    }
    const int reason = SSL_get_error(ssl_.get(), n);
    ERR_clear_error();
    // The socket's receive timeout shows as a wanted read (the BIO treats EAGAIN as retry);
    // anything else — close_notify, a TCP close, a reset, an alert — is the connection's end.
    return reason != SSL_ERROR_WANT_READ;
  }
}

}  // namespace stella::testing
