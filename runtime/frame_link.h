// A framed, authenticated link to one peer, as the code that speaks the protocol sees it: frames
// in through a handler, frames out through Send, a close with a reason. FramedConnection is the
// real one (TLS over TCP, runtime/framed_connection.h); tests and fuzzers drive protocol logic
// through their own, without sockets or TLS. No Asio in this header.
//
// Threading: as for FramedConnection, every call is made on the link's one thread, and the
// handlers run there.
#ifndef STELLA_RUNTIME_FRAME_LINK_H_
#define STELLA_RUNTIME_FRAME_LINK_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "runtime/frame_codec.h"
#include "runtime/tls/x509.h"

namespace google::protobuf {
class MessageLite;
}  // namespace google::protobuf

namespace stella::runtime {

class FrameLink {
 public:
  // Called for each whole frame received. The payload is valid only during the call.
  using FrameHandler = std::function<void(const FrameView& frame)>;
  // Called once, when the link has closed, with why: OK for a close this side asked for with an
  // OK status; UNAVAILABLE when the peer went away; UNAUTHENTICATED when a certificate was refused
  // by either side (with the readable sentence); INVALID_ARGUMENT or RESOURCE_EXHAUSTED when the
  // peer broke the protocol (the peer was sent a GOAWAY saying so).
  using CloseHandler = std::function<void(const absl::Status& reason)>;

  virtual ~FrameLink() = default;

  // Starts delivering frames. Call once. The link holds the handlers until it has closed, so a
  // handler must refer to the link (or to anything that owns it) weakly.
  virtual void Start(FrameHandler on_frame, CloseHandler on_closed) = 0;

  // Queues a frame. RESOURCE_EXHAUSTED when the payload is over the peer's maximum or the writer
  // queue is full; FAILED_PRECONDITION once the link is closing.
  virtual absl::Status Send(FrameType type, std::uint16_t flags, const CorrelationId& id,
                            const google::protobuf::MessageLite& payload) = 0;
  // As Send, with wire bytes of further fields appended to the serialized payload (a relay's
  // pass-through body; AppendFrame's raw_tail).
  virtual absl::Status Send(FrameType type, std::uint16_t flags, const CorrelationId& id,
                            const google::protobuf::MessageLite& payload,
                            std::span<const std::uint8_t> raw_tail) = 0;
  // Queues a frame whose payload is already serialized.
  virtual absl::Status SendBytes(FrameType type, std::uint16_t flags, const CorrelationId& id,
                                 std::span<const std::uint8_t> payload) = 0;

  // Queues a small frame that ends a call, a stream or the link (a final error RESPONSE, CANCEL,
  // HELLO_ACK, GOAWAY) even when the writer queue is over its bound: there is at most one such
  // frame per call, so they are bounded by the calls in flight, and dropping one would leave a
  // call that never ends. FAILED_PRECONDITION once the link is closing; RESOURCE_EXHAUSTED only
  // for a payload over the maximum.
  virtual absl::Status SendControl(FrameType type, std::uint16_t flags, const CorrelationId& id,
                                   const google::protobuf::MessageLite& payload) = 0;

  // Closes gracefully: what is queued is written first. `reason` is what the close handler
  // receives (the first reason given wins). The close handler runs later, never inside Close.
  virtual void Close(absl::Status reason) = 0;
  // Closes at once, for a peer that no longer answers (a silent path): nothing queued is written
  // and no close_notify is exchanged, so the close handler runs without waiting on the network.
  virtual void Abort(absl::Status reason) = 0;

  // Who the peer is, from its certificate (empty fields if it sent none).
  virtual const tls::CertificateIdentity& peer() const = 0;
  // "127.0.0.1:53412".
  virtual const std::string& remote_address() const = 0;
};

}  // namespace stella::runtime

#endif  // STELLA_RUNTIME_FRAME_LINK_H_
