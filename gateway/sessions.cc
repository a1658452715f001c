// The gateway's sessions: the protocol state machine of each accepted connection once its TLS
// handshake is done — HELLO and identity binding, heartbeats, calls relayed between a caller and
// a service stream, windows, deadlines, cancel, disconnects. They speak through
// runtime::FrameLink and do no socket I/O of their own (their timers run on the hub's
// io_context), so tests/fuzz/gateway_session_fuzzer.cc drives them without TLS.
//
// Internal to the gateway; not installed.
#include "gateway/sessions.h"

#include <boost/asio/steady_timer.hpp>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/keepalive.h"
#include "runtime/request_envelope.h"
#include "runtime/status_macros.h"
#include "runtime/status_text.h"
#include "spdlog/spdlog.h"
#include "stella/router/v1/frames.pb.h"

namespace stella::gateway {
namespace {

namespace asio = boost::asio;
namespace v1 = ::stella::router::v1;
using runtime::CorrelationId;
using runtime::FrameLink;
using runtime::FrameType;
using runtime::FrameView;
// Metadata keys beginning with this are the gateway's to set; a caller's are dropped.
constexpr char kReservedPrefix[] = "stella-";
constexpr char kCallerIdentityKey[] = "stella-caller-identity";

// The largest a stream's flow-control window may grow (docs/protocol.md, "Flow control").
constexpr std::int64_t kMaxWindow = (std::int64_t{1} << 31) - 1;

// The grant of a WINDOW_UPDATE payload; INVALID_ARGUMENT naming what is wrong with it.
absl::StatusOr<std::uint32_t> ParseWindowUpdate(std::span<const std::uint8_t> payload) {
  v1::WindowUpdate update;
  if (!update.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return absl::InvalidArgumentError("WINDOW_UPDATE payload is not a valid WindowUpdate message");
  }
  if (update.bytes() == 0) {
    return absl::InvalidArgumentError("WINDOW_UPDATE granting 0 bytes");
  }
  return update.bytes();
}

// Adds `grant` to a stream's send window; INVALID_ARGUMENT past the largest window.
absl::Status Grow(std::int64_t& window, std::uint32_t grant) {
  if (window + grant > kMaxWindow) {
    return absl::InvalidArgumentError(absl::StrCat("WINDOW_UPDATE of ", grant,
                                                   " bytes pushes a stream window of ", window,
                                                   " bytes past the maximum of 2^31-1"));
  }
  window += grant;
  return absl::OkStatus();
}

// Takes a stream frame of `bytes` from the window its sender had; RESOURCE_EXHAUSTED when the
// sender ignored its window.
absl::Status Consume(std::int64_t& window, FrameType type, std::size_t bytes) {
  if (static_cast<std::int64_t>(bytes) > window) {
    return absl::ResourceExhaustedError(
        absl::StrCat(runtime::FrameTypeName(type), " of ", bytes,
                     " bytes exceeds the stream's remaining flow-control window of ", window,
                     " bytes; wait for WINDOW_UPDATE"));
  }
  window -= static_cast<std::int64_t>(bytes);
  return absl::OkStatus();
}

bool IsConnectionLevelType(FrameType type) {
  return type == FrameType::kHello || type == FrameType::kHelloAck ||
         type == FrameType::kHeartbeat || type == FrameType::kGoaway;
}

}  // namespace

class ServiceSession;
class CallerSession;

// What both kinds of session share: the connection, the HELLO deadline, heartbeats.
class Session {
 public:
  // `hub` owns the session and outlives it.
  Session(SessionHub* hub, std::shared_ptr<FrameLink> connection, std::uint64_t id,
          absl::Duration hello_timeout, absl::Duration heartbeat_interval)
      : hub_(hub),
        connection_(std::move(connection)),
        id_(id),
        hello_timeout_(hello_timeout),
        heartbeat_interval_(heartbeat_interval),
        hello_timer_(hub_->io),
        heartbeat_timer_(hub_->io),
        last_received_(absl::Now()) {}
  virtual ~Session() = default;

  FrameLink& connection() { return *connection_; }
  std::uint64_t id() const { return id_; }

  // Tells the peer why and closes (a protocol violation or a refused HELLO).
  void GoAway(absl::StatusCode code, const std::string& reason) {
    v1::Goaway goaway;
    goaway.set_code(static_cast<int>(code));
    goaway.set_reason(runtime::StatusText(reason));
    (void)connection_->SendControl(FrameType::kGoaway, 0, CorrelationId{}, goaway);
    spdlog::warn("closing connection {} with {} ({}): {}", id_, connection_->remote_address(),
                 PeerName(), reason);
    connection_->Close(absl::Status(code, reason));
  }

  void GoAway(const absl::Status& violation) {
    GoAway(violation.code(), std::string(violation.message()));
  }

  std::string PeerName() const { return IdentityName(connection_->peer()); }

 protected:
  template <typename SessionType>
  friend void StartSession(const std::shared_ptr<SessionType>& session);

  // Validates the frame's shape common to both roles and handles HELLO ordering, heartbeats and
  // GOAWAY. Returns true if the frame is for the subclass to handle.
  bool Screen(const FrameView& frame) {
    last_received_ = absl::Now();
    const bool connection_level = runtime::IsConnectionLevel(frame.header.correlation_id);
    if (IsConnectionLevelType(frame.header.type) != connection_level) {
      GoAway(absl::StatusCode::kInvalidArgument,
             absl::StrCat(
                 runtime::FrameTypeName(frame.header.type), " frame with ",
                 connection_level ? "an all-zero" : "a non-zero", " correlation id; ",
                 runtime::FrameTypeName(frame.header.type),
                 connection_level ? " frames belong to a stream" : " frames are connection-level"));
      return false;
    }
    if (!hello_done_) {
      if (frame.header.type != FrameType::kHello) {
        GoAway(absl::StatusCode::kInvalidArgument,
               absl::StrCat("expected HELLO as the first frame, got ",
                            runtime::FrameTypeName(frame.header.type)));
        return false;
      }
      v1::Hello hello;
      if (!hello.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()))) {
        GoAway(absl::StatusCode::kInvalidArgument, "HELLO payload is not a valid Hello message");
        return false;
      }
      hello_timer_.cancel();
      hello_done_ = true;
      OnHello(hello);
      return false;
    }
    switch (frame.header.type) {
      case FrameType::kHello:
        GoAway(absl::StatusCode::kInvalidArgument, "a second HELLO on one connection");
        return false;
      case FrameType::kHelloAck:
        GoAway(absl::StatusCode::kInvalidArgument, "HELLO_ACK is the gateway's to send");
        return false;
      case FrameType::kHeartbeat: {
        v1::Heartbeat heartbeat;
        if (!heartbeat.ParseFromArray(frame.payload.data(),
                                      static_cast<int>(frame.payload.size()))) {
          GoAway(absl::StatusCode::kInvalidArgument, "HEARTBEAT payload does not parse");
          return false;
        }
        if (!heartbeat.ack()) {
          heartbeat.set_ack(true);
          (void)connection_->Send(FrameType::kHeartbeat, 0, CorrelationId{}, heartbeat);
        }
        return false;
      }
      case FrameType::kGoaway:
        OnPeerGoaway();
        return false;
      default:
        return true;
    }
  }

  // Arms the HELLO deadline; called when the session starts.
  void StartHelloTimer(const std::weak_ptr<Session>& weak) {
    hello_timer_.expires_after(absl::ToChronoMilliseconds(hello_timeout_));
    hello_timer_.async_wait([weak](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || self == nullptr || self->hello_done_) {
        return;
      }
      self->GoAway(absl::StatusCode::kDeadlineExceeded,
                   absl::StrCat("no HELLO within HandshakeTimeoutSeconds (",
                                absl::FormatDuration(self->hello_timeout_), ")"));
    });
  }

  // After `after` (the first time, one interval), sends a heartbeat, or closes a peer silent for
  // runtime::kMissedHeartbeats intervals; then looks again at the next heartbeat or just past
  // the moment the silence would reach that limit, whichever comes first.
  void StartHeartbeats(const std::weak_ptr<Session>& weak, absl::Duration after) {
    heartbeat_timer_.expires_after(absl::ToChronoMicroseconds(after));
    heartbeat_timer_.async_wait([weak](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || self == nullptr || self->closed_) {
        return;
      }
      const absl::Duration silent = absl::Now() - self->last_received_;
      if (silent > runtime::kMissedHeartbeats * self->heartbeat_interval_) {
        self->OnSilent();
        self->connection_->Abort(absl::UnavailableError(
            absl::StrCat("no frame from ", self->PeerName(), " for ", absl::FormatDuration(silent),
                         " (", runtime::kMissedHeartbeats, " heartbeat intervals)")));
        return;
      }
      v1::Heartbeat heartbeat;
      heartbeat.set_sequence(++self->heartbeat_sequence_);
      heartbeat.set_send_time_unix_us(absl::ToUnixMicros(absl::Now()));
      (void)self->connection_->Send(FrameType::kHeartbeat, 0, CorrelationId{}, heartbeat);
      self->StartHeartbeats(weak, runtime::NextHeartbeatCheck(silent, self->heartbeat_interval_));
    });
  }

  void StopTimers() {
    closed_ = true;
    hello_timer_.cancel();
    heartbeat_timer_.cancel();
  }

  virtual void OnHello(const v1::Hello& hello) = 0;
  virtual void OnPeerGoaway() {}
  virtual void OnSilent() {}

  // Sends HELLO_ACK accepting the peer.
  void Accept() {
    const auto& tls = hub_->options.config.services;
    v1::HelloAck ack;
    ack.set_accepted(true);
    ack.set_heartbeat_interval_ms(
        static_cast<std::uint32_t>(absl::ToInt64Milliseconds(heartbeat_interval_)));
    ack.set_max_payload_size(tls.max_payload_size);
    ack.set_initial_stream_window(hub_->options.config.limits.stream_window_bytes);
    ack.set_max_concurrent_streams(MaxStreams());
    ack.set_gateway_id(hub_->options.config.gateway_id);
    (void)connection_->SendControl(FrameType::kHelloAck, 0, CorrelationId{}, ack);
    accepted_ = true;
    hub_->metrics().ConnectionOpened(Role());
  }

  // Reports the close of an accepted connection to the metrics.
  void CountClose() {
    if (accepted_) {
      accepted_ = false;
      hub_->metrics().ConnectionClosed(Role());
    }
  }

  // Sends HELLO_ACK refusing the peer, and closes.
  void Refuse(const absl::Status& why) {
    v1::HelloAck ack;
    ack.set_accepted(false);
    ack.set_code(static_cast<int>(why.code()));
    ack.set_reason(runtime::StatusText(why.message()));
    ack.set_gateway_id(hub_->options.config.gateway_id);
    (void)connection_->SendControl(FrameType::kHelloAck, 0, CorrelationId{}, ack);
    spdlog::warn("refused HELLO on connection {} from {} ({}): {}", id_,
                 connection_->remote_address(), PeerName(), std::string(why.message()));
    connection_->Close(why);
  }

  virtual std::uint32_t MaxStreams() const = 0;
  virtual const char* Role() const = 0;

  SessionHub* hub_;
  std::shared_ptr<FrameLink> connection_;
  std::uint64_t id_;
  absl::Duration hello_timeout_;
  absl::Duration heartbeat_interval_;
  asio::steady_timer hello_timer_;
  asio::steady_timer heartbeat_timer_;
  absl::Time last_received_;
  std::uint64_t heartbeat_sequence_ = 0;
  bool hello_done_ = false;
  bool accepted_ = false;
  bool closed_ = false;
};

// Starts a session: the HELLO deadline, then the connection with handlers that hold the session
// weakly (the gateway state owns it).
template <typename SessionType>
void StartSession(const std::shared_ptr<SessionType>& session) {
  session->StartHelloTimer(session);
  std::weak_ptr<SessionType> weak = session;
  session->connection().Start(
      [weak](const FrameView& frame) {
        if (auto self = weak.lock()) {
          self->OnFrame(frame);
        }
      },
      [weak](const absl::Status& reason) {
        if (auto self = weak.lock()) {
          self->OnClosed(reason);  // `self` keeps it alive while it removes itself
        }
      });
}

// The gateway's side of one caller connection: the calls it opened, each bound to a service
// stream.
class CallerSession : public Session, public std::enable_shared_from_this<CallerSession> {
 public:
  template <typename SessionType>
  friend void StartSession(const std::shared_ptr<SessionType>& session);
  using Session::Session;

  void Start() { StartSession(shared_from_this()); }

  // A frame of the response stream for the caller's call `caller_id`, forwarded as it came.
  void DeliverResponse(const CorrelationId& caller_id, std::span<const std::uint8_t> payload,
                       std::uint16_t flags) {
    auto it = calls_.find(caller_id);
    if (it == calls_.end()) {
      return;  // the caller cancelled or timed out; the frame was in flight
    }
    if (absl::Status sent = connection_->SendBytes(FrameType::kResponse, flags, caller_id, payload);
        !sent.ok()) {
      // The caller does not read fast enough to take its responses: end the call, not the
      // gateway's memory.
      FailCall(caller_id, absl::ResourceExhaustedError(sent.message()), /*cancel_service=*/true);
      return;
    }
    if (flags & runtime::kFlagFinal) {
      absl::StatusCode code = absl::StatusCode::kOk;
      if (flags & runtime::kFlagError) {
        // Only the final frame's envelope is read, for its status code; bodies never are.
        v1::Response response;
        code = response.ParseFromArray(payload.data(), static_cast<int>(payload.size()))
                   ? static_cast<absl::StatusCode>(response.code())
                   : absl::StatusCode::kUnknown;
      }
      hub_->metrics().CallFinished(it->second.method, code, absl::Now() - it->second.started);
      EndCall(it);
    }
  }

  std::size_t calls_in_flight() const { return calls_.size(); }

  // A WINDOW_UPDATE from the service granting `grant` more request bytes on `caller_id`. An
  // error (the window would overflow) is the service's violation.
  absl::Status DeliverWindowUpdate(const CorrelationId& caller_id, std::uint32_t grant,
                                   std::span<const std::uint8_t> payload) {
    auto it = calls_.find(caller_id);
    if (it == calls_.end()) {
      return absl::OkStatus();
    }
    STELLA_RETURN_IF_ERROR(Grow(it->second.request_window, grant));
    if (absl::Status sent = connection_->SendBytes(FrameType::kWindowUpdate, 0, caller_id, payload);
        !sent.ok()) {
      // A lost grant would stall the caller's request stream until its deadline: end the call.
      FailCall(caller_id, absl::ResourceExhaustedError(sent.message()), /*cancel_service=*/true);
    }
    return absl::OkStatus();
  }

  // Ends `caller_id` with `status` (a final RESPONSE with ERROR); optionally cancels the
  // service side.
  void FailCall(const CorrelationId& caller_id, const absl::Status& status, bool cancel_service);

 private:
  struct Call {
    std::weak_ptr<ServiceSession> service;
    std::shared_ptr<Instance> instance;
    CorrelationId service_id{};
    std::unique_ptr<asio::steady_timer> deadline;
    std::string method;
    absl::Time started;
    // Request bytes the caller may still send before the service grants more.
    std::int64_t request_window = 0;
    bool request_done = false;
  };
  using Calls = absl::flat_hash_map<CorrelationId, Call, runtime::CorrelationIdHash>;

  void OnHello(const v1::Hello& hello) override {
    if (hello.role() != v1::ROLE_CALLER) {
      Refuse(absl::PermissionDeniedError(absl::StrCat("this is the caller listener; a ",
                                                      v1::Role_Name(hello.role()),
                                                      " HELLO belongs on the service listener")));
      return;
    }
    if (absl::Status admitted = hub_->options.config.caller_policy.Admit(connection_->peer());
        !admitted.ok()) {
      Refuse(admitted);
      return;
    }
    region_ = hello.metadata().contains("region") ? hello.metadata().at("region") : "";
    Accept();
    StartHeartbeats(shared_from_this(), heartbeat_interval_);
    spdlog::info("caller {} ({}) connected on connection {}{}", PeerName(),
                 connection_->remote_address(), id_,
                 region_.empty() ? "" : absl::StrCat(" in region ", region_));
  }

  std::uint32_t MaxStreams() const override {
    return hub_->options.config.limits.max_in_flight_per_caller_connection;
  }
  const char* Role() const override { return "caller"; }

  void OnFrame(const FrameView& frame) {
    if (!Screen(frame)) {
      return;
    }
    const CorrelationId& id = frame.header.correlation_id;
    switch (frame.header.type) {
      case FrameType::kRequest:
        OnRequest(frame);
        return;
      case FrameType::kCancel: {
        auto it = calls_.find(id);
        if (it != calls_.end()) {
          v1::Cancel cancel;
          (void)cancel.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()));
          CancelService(it->second, absl::CancelledError(cancel.reason().empty()
                                                             ? "the caller cancelled the call"
                                                             : cancel.reason()));
          EndCall(it);
        }
        return;
      }
      case FrameType::kWindowUpdate: {
        absl::StatusOr<std::uint32_t> grant = ParseWindowUpdate(frame.payload);
        absl::Status forwarded =
            grant.ok() ? ForwardWindowUpdate(id, *grant, frame.payload) : grant.status();
        if (forwarded.code() == absl::StatusCode::kInvalidArgument) {
          GoAway(forwarded);  // a malformed grant or an overflowing window: the caller's fault
        } else if (!forwarded.ok()) {
          // The service's queue is full, so the grant cannot reach it: its response stream would
          // stall until the deadline. End the call now.
          FailCall(id,
                   forwarded.code() == absl::StatusCode::kResourceExhausted
                       ? absl::ResourceExhaustedError(forwarded.message())
                       : absl::UnavailableError(forwarded.message()),
                   /*cancel_service=*/true);
        }
        return;
      }
      default:
        GoAway(absl::StatusCode::kInvalidArgument,
               absl::StrCat("a caller may not send ", runtime::FrameTypeName(frame.header.type),
                            " frames"));
    }
  }

  void OnRequest(const FrameView& frame);
  absl::Status ForwardWindowUpdate(const CorrelationId& id, std::uint32_t grant,
                                   std::span<const std::uint8_t> payload);
  void CancelService(Call& call, const absl::Status& why);

  void EndCall(Calls::iterator it) {
    if (it->second.deadline) {
      it->second.deadline->cancel();
    }
    if (it->second.instance) {
      it->second.instance->outstanding.fetch_sub(1, std::memory_order_relaxed);
    }
    calls_.erase(it);
  }

  // Refuses a call before it reaches a service, and counts it. A method no service registers is
  // counted as "(unknown)", so that callers cannot grow the metrics without bound.
  void Reject(const CorrelationId& id, const std::string& method, const absl::Status& status) {
    const bool known = hub_->reader.Get().methods.contains(method);
    hub_->metrics().CallFinished(known ? method : "(unknown)", status.code(), absl::ZeroDuration());
    Answer(id, status);
  }

  // Answers a call that never reached a service with a final error RESPONSE.
  void Answer(const CorrelationId& id, const absl::Status& status) {
    v1::Response response;
    response.set_code(static_cast<int>(status.code()));
    // Valid UTF-8 and bounded, so that the caller can parse it (a service's cancel reason is
    // part of some messages).
    response.set_message(runtime::StatusText(status.message()));
    // Past the writer queue's bound if need be: without it the call would never end at the
    // caller. Fails only once the connection is closing, which ends every call on it.
    (void)connection_->SendControl(FrameType::kResponse, runtime::kFlagFinal | runtime::kFlagError,
                                   id, response);
  }

  void OnClosed(const absl::Status& reason) {
    StopTimers();
    CountClose();
    for (auto& [id, call] : calls_) {
      CancelService(call, absl::CancelledError("the caller disconnected"));
      if (call.deadline) {
        call.deadline->cancel();
      }
      if (call.instance) {
        call.instance->outstanding.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    calls_.clear();
    hub_->callers.erase(id_);
    spdlog::info("caller connection {} ({}) closed: {}", id_, PeerName(),
                 reason.ok() ? std::string("gateway shutdown") : std::string(reason.message()));
  }

  std::string region_;
  Calls calls_;
};

// The gateway's side of one service connection: its registration and the streams the gateway
// opened on it.
class ServiceSession : public Session, public std::enable_shared_from_this<ServiceSession> {
 public:
  template <typename SessionType>
  friend void StartSession(const std::shared_ptr<SessionType>& session);
  using Session::Session;

  void Start() { StartSession(shared_from_this()); }

  // Opens a stream for a caller's call and sends its first REQUEST frame. Returns the stream's
  // id on this connection.
  absl::StatusOr<CorrelationId> OpenStream(std::weak_ptr<CallerSession> caller,
                                           const CorrelationId& caller_id,
                                           const v1::Request& request,
                                           std::span<const std::uint8_t> body_field,
                                           std::uint16_t flags) {
    const CorrelationId id = runtime::CorrelationIdFromCounter(next_stream_++);
    if (absl::Status sent = connection_->Send(FrameType::kRequest, flags, id, request, body_field);
        !sent.ok()) {
      return sent;
    }
    streams_[id] =
        Stream{std::move(caller), caller_id, hub_->options.config.limits.stream_window_bytes};
    return id;
  }

  // Forwards a later frame of a caller's request stream.
  absl::Status ForwardRequest(const CorrelationId& id, std::span<const std::uint8_t> payload,
                              std::uint16_t flags) {
    if (!streams_.contains(id)) {
      return absl::UnavailableError("the service already ended the call");
    }
    return connection_->SendBytes(FrameType::kRequest, flags, id, payload);
  }

  // A WINDOW_UPDATE from the caller granting `grant` more response bytes on stream `id`. An
  // error (the window would overflow) is the caller's violation.
  absl::Status ForwardWindowUpdate(const CorrelationId& id, std::uint32_t grant,
                                   std::span<const std::uint8_t> payload) {
    auto it = streams_.find(id);
    if (it == streams_.end()) {
      return absl::OkStatus();
    }
    STELLA_RETURN_IF_ERROR(Grow(it->second.response_window, grant));
    // A failure here is the service's full queue, not the caller's violation: the caller's
    // session ends the call.
    return connection_->SendBytes(FrameType::kWindowUpdate, 0, id, payload);
  }

  // The caller is gone or out of time: tell the service to stop.
  void Cancel(const CorrelationId& id, const absl::Status& why) {
    if (streams_.erase(id) == 0) {
      return;
    }
    v1::Cancel cancel;
    cancel.set_code(static_cast<int>(why.code()));
    cancel.set_reason(runtime::StatusText(why.message()));
    (void)connection_->SendControl(FrameType::kCancel, 0, id, cancel);
  }

  std::string Describe() const {
    return instance_ ? absl::StrCat("instance \"", instance_->instance_id, "\" of service \"",
                                    instance_->service_name, "\"")
                     : absl::StrCat("service connection ", id_);
  }

 private:
  struct Stream {
    std::weak_ptr<CallerSession> caller;
    CorrelationId caller_id{};
    // Response bytes the service may still send before the caller grants more.
    std::int64_t response_window = 0;
  };

  void OnHello(const v1::Hello& hello) override {
    if (hello.role() != v1::ROLE_SERVICE) {
      Refuse(absl::PermissionDeniedError(absl::StrCat("this is the service listener; a ",
                                                      v1::Role_Name(hello.role()),
                                                      " HELLO belongs on the caller listener")));
      return;
    }
    if (hello.service_name().empty() || hello.endpoints_size() == 0) {
      Refuse(absl::InvalidArgumentError(
          "a service HELLO needs a service_name and at least one endpoint"));
      return;
    }
    if (absl::Status allowed = hub_->options.config.service_identities.Check(hello.service_name(),
                                                                             connection_->peer());
        !allowed.ok()) {
      Refuse(allowed);
      return;
    }
    auto instance = std::make_shared<Instance>();
    instance->connection_id = id_;
    instance->service_name = hello.service_name();
    instance->instance_id =
        hello.instance_id().empty() ? absl::StrCat("connection-", id_) : hello.instance_id();
    auto metadata = hello.metadata();
    instance->region = metadata.contains("region") ? metadata.at("region") : "";
    instance->version = metadata.contains("version") ? metadata.at("version") : "";
    instance->identity = connection_->peer();
    instance->endpoints.assign(hello.endpoints().begin(), hello.endpoints().end());
    instance->file_descriptor_set = hello.file_descriptor_set();
    instance->session = weak_from_this();
    if (absl::Status added = hub_->routes.Add(instance); !added.ok()) {
      Refuse(added);
      return;
    }
    instance_ = std::move(instance);
    Accept();
    StartHeartbeats(shared_from_this(), heartbeat_interval_);
    spdlog::info("{} registered {} method(s) from {} ({}) on connection {}", Describe(),
                 instance_->endpoints.size(), connection_->remote_address(), PeerName(), id_);
  }

  std::uint32_t MaxStreams() const override {
    return hub_->options.config.limits.max_in_flight_per_service_connection;
  }
  const char* Role() const override { return "service"; }

  void OnPeerGoaway() override {
    if (instance_ == nullptr || instance_->draining) {
      return;
    }
    instance_->draining = true;  // it asked to leave: no new calls
    // The acknowledgement: no REQUEST opening a stream follows this frame, so the service may
    // close once its open streams are done (docs/protocol.md, "GOAWAY").
    v1::Goaway ack;
    ack.set_reason(runtime::StatusText(
        absl::StrCat("drain acknowledged: no new calls are routed to ", Describe())));
    (void)connection_->SendControl(FrameType::kGoaway, 0, CorrelationId{}, ack);
  }

  void OnSilent() override {
    if (instance_) {
      instance_->healthy = false;
    }
  }

  void OnFrame(const FrameView& frame) {
    if (!Screen(frame)) {
      return;
    }
    const CorrelationId& id = frame.header.correlation_id;
    auto it = streams_.find(id);
    if (it == streams_.end()) {
      const std::uint64_t n = runtime::CounterFromCorrelationId(id);
      if (n == 0 || n >= next_stream_) {
        GoAway(absl::StatusCode::kInvalidArgument,
               absl::StrCat(runtime::FrameTypeName(frame.header.type),
                            " for a stream the gateway never opened"));
      }
      return;  // a stream the gateway ended itself (cancel, deadline): frames in flight
    }
    std::shared_ptr<CallerSession> caller = it->second.caller.lock();
    const CorrelationId caller_id = it->second.caller_id;
    switch (frame.header.type) {
      case FrameType::kResponse:
        if (absl::Status fits =
                Consume(it->second.response_window, frame.header.type, frame.payload.size());
            !fits.ok()) {
          GoAway(fits);
          return;
        }
        if (frame.header.final()) {
          streams_.erase(it);
        }
        if (caller) {
          caller->DeliverResponse(caller_id, frame.payload, frame.header.flags);
        }
        return;
      case FrameType::kWindowUpdate: {
        absl::StatusOr<std::uint32_t> grant = ParseWindowUpdate(frame.payload);
        absl::Status delivered = !grant.ok() ? grant.status()
                                 : caller != nullptr
                                     ? caller->DeliverWindowUpdate(caller_id, *grant, frame.payload)
                                     : absl::OkStatus();
        if (!delivered.ok()) {
          GoAway(delivered);
        }
        return;
      }
      case FrameType::kCancel: {
        streams_.erase(it);
        v1::Cancel cancel;
        (void)cancel.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()));
        if (caller) {
          caller->FailCall(
              caller_id,
              absl::Status(cancel.code() == 0 ? absl::StatusCode::kCancelled
                                              : static_cast<absl::StatusCode>(cancel.code()),
                           absl::StrCat(Describe(), " cancelled the call: ", cancel.reason())),
              /*cancel_service=*/false);
        }
        return;
      }
      default:
        GoAway(absl::StatusCode::kInvalidArgument,
               absl::StrCat("a service may not send ", runtime::FrameTypeName(frame.header.type),
                            " frames"));
    }
  }

  void OnClosed(const absl::Status& reason) {
    StopTimers();
    CountClose();
    // Removed from the routing table exactly once, by the connection that registered.
    if (instance_ != nullptr && hub_->routes.Remove(id_)) {
      instance_->healthy = false;
    }
    const absl::Status failure = absl::UnavailableError(absl::StrCat(
        Describe(), " disconnected: ",
        reason.ok() ? std::string("gateway shutdown") : std::string(reason.message())));
    Streams streams = std::move(streams_);
    streams_.clear();
    for (auto& [id, stream] : streams) {
      if (auto caller = stream.caller.lock()) {
        caller->FailCall(stream.caller_id, failure, /*cancel_service=*/false);
      }
    }
    hub_->services.erase(id_);
    spdlog::info("{} ({}) closed connection {}: {}", Describe(), PeerName(), id_,
                 reason.ok() ? std::string("gateway shutdown") : std::string(reason.message()));
  }

  using Streams = absl::flat_hash_map<CorrelationId, Stream, runtime::CorrelationIdHash>;
  std::shared_ptr<Instance> instance_;
  Streams streams_;
  std::uint64_t next_stream_ = 1;
};

void CallerSession::OnRequest(const FrameView& frame) {
  const CorrelationId& id = frame.header.correlation_id;
  auto it = calls_.find(id);
  if (it != calls_.end()) {
    Call& call = it->second;
    if (call.request_done) {
      GoAway(absl::StatusCode::kInvalidArgument,
             "REQUEST on a stream whose request direction already ended with FINAL");
      return;
    }
    if (absl::Status fits = Consume(call.request_window, frame.header.type, frame.payload.size());
        !fits.ok()) {
      GoAway(fits);
      return;
    }
    call.request_done = frame.header.final();
    std::shared_ptr<ServiceSession> service = call.service.lock();
    absl::Status sent = service == nullptr ? absl::UnavailableError("the service is gone")
                                           : service->ForwardRequest(call.service_id, frame.payload,
                                                                     frame.header.flags);
    if (!sent.ok()) {
      FailCall(id, sent, /*cancel_service=*/true);
    }
    return;
  }

  // The envelope is read and rewritten; the body passes through as the bytes that came.
  v1::Request request;
  std::span<const std::uint8_t> body_field;
  if (absl::Status split = runtime::SplitRequestBody(frame.payload, &request, &body_field);
      !split.ok()) {
    GoAway(split);
    return;
  }
  if (request.method().empty()) {
    Reject(id, request.method(),
           absl::InvalidArgumentError("the first REQUEST of a call must name its method"));
    return;
  }
  const auto& limits = hub_->options.config.limits;
  if (hub_->stopping) {
    Reject(id, request.method(),
           absl::UnavailableError("the gateway is draining: send the call to another gateway"));
    return;
  }
  if (calls_.size() >= limits.max_in_flight_per_caller_connection) {
    Reject(id, request.method(),
           absl::ResourceExhaustedError(
               absl::StrCat("this connection already has ", calls_.size(),
                            " calls in flight, the limit (MaxInFlightPerCallerConnection)")));
    return;
  }
  if (absl::Status allowed =
          hub_->options.config.caller_policy.Check(connection_->peer(), request.method());
      !allowed.ok()) {
    Reject(id, request.method(), allowed);
    return;
  }
  absl::StatusOr<std::shared_ptr<Instance>> picked = hub_->reader.Pick(request.method(), region_);
  if (!picked.ok()) {
    Reject(id, request.method(), picked.status());
    return;
  }
  std::shared_ptr<Instance> instance = *std::move(picked);
  std::shared_ptr<ServiceSession> service = instance->session.lock();
  if (service == nullptr) {
    Reject(id, request.method(),
           absl::UnavailableError(absl::StrCat("instance \"", instance->instance_id,
                                               "\" of service \"", instance->service_name,
                                               "\" is disconnecting")));
    return;
  }
  if (instance->outstanding.load(std::memory_order_relaxed) >=
      static_cast<std::int64_t>(limits.max_in_flight_per_service_connection)) {
    Reject(id, request.method(),
           absl::ResourceExhaustedError(absl::StrCat(
               "instance \"", instance->instance_id, "\" of service \"", instance->service_name,
               "\" has ", limits.max_in_flight_per_service_connection,
               " calls in flight, the limit (MaxInFlightPerServiceConnection)")));
    return;
  }

  // The deadline: what the caller allows, else the method's default, else the gateway's.
  absl::Duration timeout = limits.default_timeout;
  if (request.timeout_us() > 0) {
    timeout = absl::Microseconds(static_cast<std::int64_t>(request.timeout_us()));
  } else {
    const RoutingSnapshot& snapshot = hub_->reader.Get();
    auto route = snapshot.methods.find(request.method());
    if (route != snapshot.methods.end() && route->second.endpoint.default_timeout_ms() > 0) {
      timeout = absl::Milliseconds(route->second.endpoint.default_timeout_ms());
    }
  }
  request.set_timeout_us(static_cast<std::uint64_t>(absl::ToInt64Microseconds(timeout)));
  // Caller metadata reaches the handler, except keys only the gateway may set.
  auto* metadata = request.mutable_metadata();
  for (auto meta = metadata->begin(); meta != metadata->end();) {
    if (absl::StartsWith(meta->first, kReservedPrefix)) {
      meta = metadata->erase(meta);
    } else {
      ++meta;
    }
  }
  (*metadata)[kCallerIdentityKey] = IdentityName(connection_->peer());

  absl::StatusOr<CorrelationId> service_id =
      service->OpenStream(weak_from_this(), id, request, body_field, frame.header.flags);
  if (!service_id.ok()) {
    // A full writer queue is the service's backlog; a connection already closing (a violation
    // or a drain, not yet out of the table) is an instance that is going away.
    Reject(id, request.method(),
           service_id.status().code() == absl::StatusCode::kResourceExhausted
               ? absl::ResourceExhaustedError(service_id.status().message())
               : absl::UnavailableError(absl::StrCat(
                     service->Describe(), " is closing: ", service_id.status().message())));
    return;
  }
  instance->outstanding.fetch_add(1, std::memory_order_relaxed);
  Call call;
  call.service = service;
  call.instance = instance;
  call.service_id = *service_id;
  call.request_done = frame.header.final();
  call.request_window = static_cast<std::int64_t>(limits.stream_window_bytes) -
                        static_cast<std::int64_t>(frame.payload.size());
  call.method = request.method();
  call.started = absl::Now();
  call.deadline = std::make_unique<asio::steady_timer>(hub_->io);
  call.deadline->expires_after(absl::ToChronoMicroseconds(timeout));
  call.deadline->async_wait([weak = weak_from_this(), id, timeout](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || self == nullptr) {
      return;
    }
    self->FailCall(id,
                   absl::DeadlineExceededError(absl::StrCat(
                       "the call's deadline of ", absl::FormatDuration(timeout), " passed")),
                   /*cancel_service=*/true);
  });
  calls_.emplace(id, std::move(call));
}

absl::Status CallerSession::ForwardWindowUpdate(const CorrelationId& id, std::uint32_t grant,
                                                std::span<const std::uint8_t> payload) {
  auto it = calls_.find(id);
  if (it == calls_.end()) {
    return absl::OkStatus();  // may race with the end of the call
  }
  if (auto service = it->second.service.lock()) {
    return service->ForwardWindowUpdate(it->second.service_id, grant, payload);
  }
  return absl::OkStatus();
}

void CallerSession::CancelService(Call& call, const absl::Status& why) {
  if (auto service = call.service.lock()) {
    service->Cancel(call.service_id, why);
  }
}

void CallerSession::FailCall(const CorrelationId& caller_id, const absl::Status& status,
                             bool cancel_service) {
  auto it = calls_.find(caller_id);
  if (it == calls_.end()) {
    return;
  }
  if (cancel_service) {
    CancelService(it->second, status);
  }
  hub_->metrics().CallFinished(it->second.method, status.code(), absl::Now() - it->second.started);
  EndCall(it);
  Answer(caller_id, status);
}

SessionHub::SessionHub(asio::io_context& io_in, GatewayOptions options_in)
    : io(io_in), options(std::move(options_in)), reader(routes) {
  if (options.metrics == nullptr) {
    options.metrics = std::make_shared<GatewayMetrics>();
  }
}

SessionHub::~SessionHub() = default;

void StartServiceSession(SessionHub& hub, std::shared_ptr<FrameLink> link,
                         absl::Duration hello_timeout, absl::Duration heartbeat_interval) {
  const std::uint64_t id = hub.next_connection_id++;
  auto session = std::make_shared<ServiceSession>(&hub, std::move(link), id, hello_timeout,
                                                  heartbeat_interval);
  hub.services[id] = session;
  session->Start();
}

void StartCallerSession(SessionHub& hub, std::shared_ptr<FrameLink> link,
                        absl::Duration hello_timeout, absl::Duration heartbeat_interval) {
  const std::uint64_t id = hub.next_connection_id++;
  auto session =
      std::make_shared<CallerSession>(&hub, std::move(link), id, hello_timeout, heartbeat_interval);
  hub.callers[id] = session;
  session->Start();
}

std::size_t CallsInFlight(const SessionHub& hub) {
  std::size_t in_flight = 0;
  for (const auto& [id, session] : hub.callers) {
    in_flight += session->calls_in_flight();
  }
  return in_flight;
}

void SendToAll(SessionHub& hub, runtime::FrameType type,
               const google::protobuf::MessageLite& payload) {
  for (auto& [id, session] : hub.callers) {
    (void)session->connection().SendControl(type, 0, CorrelationId{}, payload);
  }
  for (auto& [id, session] : hub.services) {
    (void)session->connection().SendControl(type, 0, CorrelationId{}, payload);
  }
}

void CloseAll(SessionHub& hub, const absl::Status& why) {
  // Copies first: a close may remove a session at once.
  auto callers = hub.callers;
  auto services = hub.services;
  for (auto& [id, session] : callers) {
    session->connection().Close(why);
  }
  for (auto& [id, session] : services) {
    session->connection().Close(why);
  }
}

}  // namespace stella::gateway
