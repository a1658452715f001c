// The gateway's sessions: what happens on an accepted connection after its TLS handshake (HELLO
// and identity binding, heartbeats, calls relayed between callers and service streams, windows,
// deadlines, cancel, disconnects). Sessions speak through runtime::FrameLink and do no socket
// I/O of their own, so they are tested and fuzzed without TLS (tests/fuzz/
// gateway_session_fuzzer.cc). Internal to the gateway; not installed.
//
// Threading: everything here runs on the hub's io_context thread.
#ifndef STELLA_GATEWAY_SESSIONS_H_
#define STELLA_GATEWAY_SESSIONS_H_

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gateway/gateway.h"
#include "gateway/routing_table.h"
#include "runtime/frame_link.h"

namespace stella::gateway {

class ServiceSession;
class CallerSession;

// What the sessions of one gateway share: its options, routing table and sessions.
struct SessionHub {
  // Makes the metrics when options.metrics is null.
  SessionHub(boost::asio::io_context& io, GatewayOptions options);
  ~SessionHub();
  SessionHub(const SessionHub&) = delete;
  SessionHub& operator=(const SessionHub&) = delete;

  GatewayMetrics& metrics() { return *options.metrics; }

  boost::asio::io_context& io;  // the sessions' timers run here
  GatewayOptions options;
  RoutingTable routes;
  RoutingReader reader;  // the gateway runs on one thread, so one reader serves all sessions
  std::uint64_t next_connection_id = 1;
  // Set by a drain or shutdown: new calls are refused with UNAVAILABLE.
  bool stopping = false;
  // The sessions, owned here; each removes itself when its link closes. (The links' handlers hold
  // them weakly, so nothing else keeps them alive.)
  absl::flat_hash_map<std::uint64_t, std::shared_ptr<ServiceSession>> services;
  absl::flat_hash_map<std::uint64_t, std::shared_ptr<CallerSession>> callers;
};

// Starts the session of an authenticated link on the service (or caller) listener: the peer has
// `hello_timeout` to send HELLO, and is sent a heartbeat every `heartbeat_interval` once accepted.
void StartServiceSession(SessionHub& hub, std::shared_ptr<runtime::FrameLink> link,
                         absl::Duration hello_timeout, absl::Duration heartbeat_interval);
void StartCallerSession(SessionHub& hub, std::shared_ptr<runtime::FrameLink> link,
                        absl::Duration hello_timeout, absl::Duration heartbeat_interval);

// Calls in flight over every caller session.
std::size_t CallsInFlight(const SessionHub& hub);

// Sends a connection-level frame (a GOAWAY announcing a drain) to every session's peer.
void SendToAll(SessionHub& hub, runtime::FrameType type,
               const google::protobuf::MessageLite& payload);

// Closes every session's link with `why`.
void CloseAll(SessionHub& hub, const absl::Status& why);

}  // namespace stella::gateway

#endif  // STELLA_GATEWAY_SESSIONS_H_
