// Liveness of one framed connection, for the SDK's ends of it: a HEARTBEAT every interval, an
// answer to each of the peer's, and a close with UNAVAILABLE once nothing at all has arrived for
// three intervals (a path that went silent without closing). docs/protocol.md, "HEARTBEAT".
#ifndef STELLA_RUNTIME_KEEPALIVE_H_
#define STELLA_RUNTIME_KEEPALIVE_H_

#include <algorithm>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "runtime/frame_codec.h"

namespace stella::runtime {

class FramedConnection;

// Intervals of silence after which a peer is declared gone, on both ends of a connection.
inline constexpr int kMissedHeartbeats = 3;

// When to look again at a connection whose peer has been `silent` for that long: after one
// `interval` (the next heartbeat), or sooner, just past the moment the silence reaches
// kMissedHeartbeats intervals, so that a dead path is declared 3 intervals after its last frame
// rather than up to one interval later.
inline absl::Duration NextHeartbeatCheck(absl::Duration silent, absl::Duration interval) {
  const absl::Duration until_dead = kMissedHeartbeats * interval - silent;
  return std::clamp(until_dead + absl::Milliseconds(1), absl::Milliseconds(1), interval);
}

// Lives on the connection's executor, like the connection.
class Keepalive {
 public:
  // Watches `connection` (held weakly); `peer` names the other side in the close reason. Until
  // Begin, it only answers the peer's heartbeats.
  Keepalive(const std::shared_ptr<FramedConnection>& connection, std::string peer);
  ~Keepalive();
  Keepalive(const Keepalive&) = delete;
  Keepalive& operator=(const Keepalive&) = delete;

  // Call with every frame received: it counts as a sign of life, and a HEARTBEAT that asks for
  // an answer gets one. True if the frame was a HEARTBEAT (nothing more to do with it).
  bool OnFrame(const FrameView& frame);
  // Starts sending a heartbeat every `interval` (from HELLO_ACK) and watching for silence.
  void Begin(absl::Duration interval);
  // Stops the timer (the connection closed).
  void Stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;  // shared with the timer's callback, which holds it weakly
};

}  // namespace stella::runtime

#endif  // STELLA_RUNTIME_KEEPALIVE_H_
