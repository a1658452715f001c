// A framed, mutually authenticated TLS connection: the transport both the gateway and the service
// SDK use. One reader coroutine feeds the frame decoder and hands whole frames to a handler; one
// writer coroutine sends everything queued since its last write in a single TLS write.
//
// Threading: a connection lives on the executor of its socket (one io_context thread). Start,
// Send, Close and the accessors must be called on that executor; the handlers run on it.
#ifndef STELLA_RUNTIME_FRAMED_CONNECTION_H_
#define STELLA_RUNTIME_FRAMED_CONNECTION_H_

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/frame_codec.h"
#include "runtime/frame_link.h"
#include "runtime/tls/tls_context.h"

namespace stella::runtime {

struct ConnectionOptions {
  // Bound on TCP connect (client) and on the TLS handshake (both sides): HandshakeTimeoutSeconds.
  absl::Duration handshake_timeout = absl::Seconds(10);
  // Largest payload accepted from the peer and sent to it.
  std::uint32_t max_payload_size = kDefaultMaxPayloadSize;
  // Bound on bytes queued for the writer; Send answers RESOURCE_EXHAUSTED beyond it.
  std::size_t max_queued_bytes = 16u << 20;
  // Bound on the close_notify exchange of a graceful close.
  absl::Duration close_timeout = absl::Seconds(2);
};

// The label a connection attached to a failure status, for metrics: a TLS failure label
// ("unknown_ca", "not_tls", "rejected_by_peer", ...), "handshake_timeout", "peer_closed",
// "protocol_violation", "network", ...; "other" for a status without one; "" for OK.
std::string FailureLabelOf(const absl::Status& status);

class FramedConnection : public FrameLink, public std::enable_shared_from_this<FramedConnection> {
 public:
  // Server side: wraps an accepted TCP socket; call Handshake() next.
  static std::shared_ptr<FramedConnection> FromAccepted(boost::asio::ip::tcp::socket socket,
                                                        std::shared_ptr<const tls::TlsContext> tls,
                                                        ConnectionOptions options);

  // Client side: connects to host:port and completes the TLS handshake, each within
  // handshake_timeout. UNAVAILABLE if the address cannot be reached, DEADLINE_EXCEEDED on timeout,
  // UNAUTHENTICATED with a readable sentence if either side refuses a certificate.
  static boost::asio::awaitable<absl::StatusOr<std::shared_ptr<FramedConnection>>> Connect(
      boost::asio::any_io_executor executor, std::string host, std::uint16_t port,
      std::shared_ptr<const tls::TlsContext> tls, ConnectionOptions options);

  ~FramedConnection() override;
  FramedConnection(const FramedConnection&) = delete;
  FramedConnection& operator=(const FramedConnection&) = delete;

  // Server side: runs the TLS handshake within handshake_timeout. Errors as for Connect; the peer
  // gets only the TLS alert, the sentence is for this side's log.
  boost::asio::awaitable<absl::Status> Handshake();

  // Starts the reader and writer. Call once, after a successful handshake. The connection holds
  // the handlers until it has closed, so a handler must refer to the connection (or to anything
  // that owns it) weakly; otherwise the two keep each other alive if the io_context stops first.
  void Start(FrameHandler on_frame, CloseHandler on_closed) override;

  // Queues a frame. RESOURCE_EXHAUSTED when the payload is over max_payload_size or the writer
  // queue is full; FAILED_PRECONDITION once the connection is closing.
  absl::Status Send(FrameType type, std::uint16_t flags, const CorrelationId& id,
                    const google::protobuf::MessageLite& payload) override;
  // As Send, with wire bytes of further fields appended to the serialized payload (a relay's
  // pass-through body; AppendFrame's raw_tail).
  absl::Status Send(FrameType type, std::uint16_t flags, const CorrelationId& id,
                    const google::protobuf::MessageLite& payload,
                    std::span<const std::uint8_t> raw_tail) override;
  absl::Status SendBytes(FrameType type, std::uint16_t flags, const CorrelationId& id,
                         std::span<const std::uint8_t> payload) override;
  absl::Status SendControl(FrameType type, std::uint16_t flags, const CorrelationId& id,
                           const google::protobuf::MessageLite& payload) override;

  // Closes gracefully: what is queued is written, then TLS close_notify, then the socket.
  // `reason` is what the close handler receives (the first reason given wins).
  void Close(absl::Status reason) override;
  void Abort(absl::Status reason) override;

  // Who the peer is, from its certificate (empty fields if it sent none).
  const tls::CertificateIdentity& peer() const override;
  // True if the handshake resumed an earlier session (no certificate exchange).
  bool session_resumed() const;
  // "TLSv1.3" or "TLSv1.2".
  std::string tls_version() const;
  // The TLS snapshot this connection was made with (it keeps it alive).
  const tls::TlsContext& tls() const;
  // The executor the connection lives on; its handlers run there.
  boost::asio::any_io_executor executor() const;
  // "127.0.0.1:53412".
  const std::string& remote_address() const override;
  // Bytes queued for the writer and not yet written.
  std::size_t queued_bytes() const;

  // The connection's state, defined in the .cc (opaque, so that Asio's SSL stream stays out of
  // this header).
  struct Impl;

 private:
  explicit FramedConnection(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace stella::runtime

#endif  // STELLA_RUNTIME_FRAMED_CONNECTION_H_
