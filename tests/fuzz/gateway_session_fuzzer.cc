// libFuzzer target for the gateway's session state machine (gateway/sessions.cc), driven without
// TLS: two callers and two services on fake links send arbitrary frame sequences — requests
// before HELLO, a second HELLO, CANCEL and WINDOW_UPDATE for ids nobody opened, responses for
// streams the gateway never opened, FINAL twice, streams left open, full writer queues, links
// dropped mid-call — and the harness checks what the gateway sends back against a model of each
// peer:
//   - a peer is only sent frame types its role may receive, each payload parses as its message;
//   - a caller is never sent a RESPONSE for a call it does not have open, nor one after FINAL;
//   - a service's streams are opened with ever-growing ids, carry the caller's identity and no
//   other
//     reserved metadata, and are never sent a frame after either side ended them;
//   - nothing lost: once every service link is gone, every call a still-connected caller opened
//     has had its FINAL response, and no session, route or outstanding count is left behind.
#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "gateway/identity_rules.h"
#include "gateway/sessions.h"
#include "google/protobuf/stubs/logging.h"
#include "runtime/frame_codec.h"
#include "runtime/frame_link.h"
#include "spdlog/spdlog.h"
#include "stella/router/v1/frames.pb.h"

namespace {

// The fuzz input, read front to back one byte per choice (0 once it runs out), so that seeds are
// easy to write by hand: tests/fuzz/make_session_seeds.py writes the checked-in ones.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  std::uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  // lo + (one byte, or two big-endian bytes for a range over 256) modulo the range's size.
  template <typename T = int>
  T ConsumeIntegralInRange(T lo, T hi) {
    const std::uint64_t span = static_cast<std::uint64_t>(hi - lo) + 1;
    std::uint64_t v = Byte();
    if (span > 256) {
      v = (v << 8) | Byte();
    }
    return static_cast<T>(lo + static_cast<T>(v % span));
  }
  bool ConsumeBool() { return (Byte() & 1) != 0; }
  std::uint16_t ConsumeFlags() { return static_cast<std::uint16_t>((Byte() << 8) | Byte()); }
  // A length byte (modulo max + 1), then that many bytes.
  std::string ConsumeString(std::size_t max) {
    const std::size_t n = std::min<std::size_t>(Byte() % (max + 1), size_ - pos_);
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }
  std::size_t remaining_bytes() const { return size_ - pos_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

namespace asio = boost::asio;
namespace v1 = stella::router::v1;
using stella::runtime::CorrelationId;
using stella::runtime::CorrelationIdFromCounter;
using stella::runtime::CorrelationIdHash;
using stella::runtime::CounterFromCorrelationId;
using stella::runtime::FrameType;
using stella::runtime::FrameView;

constexpr std::uint32_t kMaxPayload = 2048;
constexpr std::uint32_t kStreamWindow = 4096;
constexpr char kTrustDomain[] = "spiffe://stella.test/";
const char* const kMethods[] = {"echo.v1.Echo/Echo", "echo.v1.Echo/Stream",
                                "greeter.v1.Greeter/SayHello", "nobody.v1.Nobody/Call", ""};
constexpr int kMethodCount = sizeof(kMethods) / sizeof(kMethods[0]);

// STELLA_FUZZ_TRACE=1 prints every frame each way, for reading a crash input.
bool trace = false;

void Trace(const char* direction, bool caller, FrameType type, std::uint16_t flags,
           const CorrelationId& id, std::size_t bytes) {
  if (trace) {
    std::fprintf(stderr, "%s %s %s flags=%u stream=%llu bytes=%zu\n", direction,
                 caller ? "caller " : "service", stella::runtime::FrameTypeName(type), flags,
                 static_cast<unsigned long long>(CounterFromCorrelationId(id)), bytes);
  }
}

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

stella::runtime::tls::CertificateIdentity IdentityFor(const std::string& path) {
  stella::runtime::tls::CertificateIdentity identity;
  identity.spiffe_id = kTrustDomain + path;
  identity.uris = {identity.spiffe_id};
  identity.subject = "CN=" + path;
  identity.common_name = path;
  return identity;
}

bool MayReceive(bool caller, FrameType type) {
  switch (type) {
    case FrameType::kHelloAck:
    case FrameType::kHeartbeat:
    case FrameType::kGoaway:
    case FrameType::kWindowUpdate:
      return true;
    case FrameType::kResponse:
      return caller;
    case FrameType::kRequest:
    case FrameType::kCancel:
      return !caller;
    default:
      return false;
  }
}

// A link as the session sees it, and the model of the peer at its other end.
class FakeLink : public stella::runtime::FrameLink, public std::enable_shared_from_this<FakeLink> {
 public:
  FakeLink(asio::io_context& io, bool caller, const std::string& identity_path)
      : io_(io), caller_(caller), peer_(IdentityFor(identity_path)) {}

  void Start(FrameHandler on_frame, CloseHandler on_closed) override {
    Check(!started_, "Start is called once per link");
    started_ = true;
    on_frame_ = std::move(on_frame);
    on_closed_ = std::move(on_closed);
  }

  absl::Status Send(FrameType type, std::uint16_t flags, const CorrelationId& id,
                    const google::protobuf::MessageLite& payload) override {
    return Queue(type, flags, id, payload.SerializeAsString(), /*control=*/false);
  }
  absl::Status Send(FrameType type, std::uint16_t flags, const CorrelationId& id,
                    const google::protobuf::MessageLite& payload,
                    std::span<const std::uint8_t> raw_tail) override {
    std::string bytes = payload.SerializeAsString();
    bytes.append(reinterpret_cast<const char*>(raw_tail.data()), raw_tail.size());
    return Queue(type, flags, id, std::move(bytes), /*control=*/false);
  }
  absl::Status SendBytes(FrameType type, std::uint16_t flags, const CorrelationId& id,
                         std::span<const std::uint8_t> payload) override {
    return Queue(type, flags, id,
                 std::string(reinterpret_cast<const char*>(payload.data()), payload.size()),
                 /*control=*/false);
  }
  absl::Status SendControl(FrameType type, std::uint16_t flags, const CorrelationId& id,
                           const google::protobuf::MessageLite& payload) override {
    return Queue(type, flags, id, payload.SerializeAsString(), /*control=*/true);
  }

  void Abort(absl::Status reason) override { Close(std::move(reason)); }

  void Close(absl::Status reason) override {
    if (closing_) {
      return;
    }
    closing_ = true;
    asio::post(io_, [self = shared_from_this(), reason = std::move(reason)] {
      CloseHandler handler = std::move(self->on_closed_);
      self->on_frame_ = nullptr;
      self->on_closed_ = nullptr;
      if (handler) {
        handler(reason);
      }
    });
  }

  const stella::runtime::tls::CertificateIdentity& peer() const override { return peer_; }
  const std::string& remote_address() const override { return remote_; }

  // The peer sends a frame (the reader stops delivering once the link is closing).
  void Deliver(FrameType type, std::uint16_t flags, const CorrelationId& id,
               const std::string& payload) {
    if (closing_ || !on_frame_) {
      return;
    }
    Trace("  peer ->", caller_, type, flags, id, payload.size());
    if (!caller_ && type == FrameType::kResponse && (flags & stella::runtime::kFlagFinal)) {
      open_streams_.erase(id);
    }
    if (!caller_ && type == FrameType::kCancel) {
      open_streams_.erase(id);
    }
    if (caller_ && type == FrameType::kRequest && !open_calls_.contains(id)) {
      open_calls_.insert(id);
    }
    if (caller_ && type == FrameType::kCancel) {
      open_calls_.erase(id);
    }
    FrameView frame;
    frame.header.type = type;
    frame.header.flags = flags;
    frame.header.payload_length = static_cast<std::uint32_t>(payload.size());
    frame.header.correlation_id = id;
    frame.payload = std::span<const std::uint8_t>(
        reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size());
    on_frame_(frame);
  }

  bool caller() const { return caller_; }
  bool closing() const { return closing_; }
  bool accepted() const { return accepted_; }
  std::uint64_t last_stream() const { return last_stream_; }
  const absl::flat_hash_set<CorrelationId, CorrelationIdHash>& open_calls() const {
    return open_calls_;
  }
  bool writable = true;  // false: the peer stopped reading and the writer queue is full

 private:
  absl::Status Queue(FrameType type, std::uint16_t flags, const CorrelationId& id,
                     std::string payload, bool control) {
    if (closing_) {
      return absl::FailedPreconditionError("link is closing");
    }
    if (payload.size() > kMaxPayload) {
      return absl::ResourceExhaustedError("payload over the maximum");
    }
    if (!control && !writable) {
      return absl::ResourceExhaustedError("writer queue full");
    }
    Observe(type, flags, id, payload, control);
    return absl::OkStatus();
  }

  // Checks a frame the gateway sent against the peer's model, and updates the model.
  void Observe(FrameType type, std::uint16_t flags, const CorrelationId& id,
               const std::string& payload, bool control) {
    Trace("<- gw   ", caller_, type, flags, id, payload.size());
    Check(MayReceive(caller_, type), "a peer is only sent frame types its role may receive");
    const bool connection_level = stella::runtime::IsConnectionLevel(id);
    switch (type) {
      case FrameType::kHelloAck: {
        Check(connection_level, "HELLO_ACK is connection-level");
        Check(!hello_acked_, "at most one HELLO_ACK per link");
        hello_acked_ = true;
        v1::HelloAck ack;
        Check(ack.ParseFromString(payload), "HELLO_ACK parses");
        accepted_ = ack.accepted();
        Check(ack.accepted() || !ack.reason().empty(), "a refusal says why");
        return;
      }
      case FrameType::kHeartbeat: {
        Check(connection_level, "HEARTBEAT is connection-level");
        v1::Heartbeat heartbeat;
        Check(heartbeat.ParseFromString(payload), "HEARTBEAT parses");
        return;
      }
      case FrameType::kGoaway: {
        Check(connection_level, "GOAWAY is connection-level");
        v1::Goaway goaway;
        Check(goaway.ParseFromString(payload), "GOAWAY parses");
        return;
      }
      default:
        break;
    }
    Check(!connection_level, "stream frames carry a stream id");
    Check(accepted_, "no stream frame before the peer was accepted");
    if (caller_) {
      Check(open_calls_.contains(id), "a caller is only sent frames for calls it has open");
      if (type == FrameType::kResponse && control) {
        // An answer the gateway made itself (responses it relays are the service's bytes).
        Check((flags & stella::runtime::kFlagFinal) && (flags & stella::runtime::kFlagError),
              "the gateway's own answers are final errors");
        v1::Response response;
        Check(response.ParseFromString(payload), "the gateway's error RESPONSE parses");
        Check(response.code() != 0 && !response.message().empty(),
              "the gateway's error RESPONSE has a code and says why");
      }
      if (type == FrameType::kResponse && (flags & stella::runtime::kFlagFinal)) {
        open_calls_.erase(id);
      }
      return;
    }
    // To a service.
    const std::uint64_t n = CounterFromCorrelationId(id);
    Check(n != 0, "the gateway opens streams with counter ids");
    if (type == FrameType::kRequest && n > last_stream_) {
      // A new stream (ids only grow; one whose first frame could not be queued is skipped).
      last_stream_ = n;
      v1::Request request;
      Check(request.ParseFromString(payload), "a stream's first REQUEST parses");
      Check(!request.method().empty(), "a stream's first REQUEST names its method");
      Check(request.timeout_us() > 0, "a stream's first REQUEST carries its deadline");
      int reserved = 0;
      for (const auto& [key, value] : request.metadata()) {
        if (absl::StartsWith(key, "stella-")) {
          ++reserved;
          Check(key == "stella-caller-identity" && absl::StartsWith(value, kTrustDomain),
                "the only reserved metadata is the caller's identity, set by the gateway");
        }
      }
      Check(reserved == 1, "the caller's identity reaches the service");
      open_streams_.insert(id);
      return;
    }
    Check(open_streams_.contains(id), "a service is never sent frames for a stream that ended");
    if (type == FrameType::kCancel) {
      open_streams_.erase(id);
    }
  }

  asio::io_context& io_;
  const bool caller_;
  const stella::runtime::tls::CertificateIdentity peer_;
  const std::string remote_ = "fuzz:0";
  FrameHandler on_frame_;
  CloseHandler on_closed_;
  bool started_ = false;
  bool closing_ = false;
  bool hello_acked_ = false;
  bool accepted_ = false;
  std::uint64_t last_stream_ = 0;
  absl::flat_hash_set<CorrelationId, CorrelationIdHash> open_calls_;
  absl::flat_hash_set<CorrelationId, CorrelationIdHash> open_streams_;
};

stella::gateway::GatewayOptions Options() {
  stella::gateway::GatewayOptions options;
  static const auto metrics = std::make_shared<stella::gateway::GatewayMetrics>();
  options.metrics = metrics;
  options.config.gateway_id = "fuzz";
  options.config.services.max_payload_size = kMaxPayload;
  options.config.limits.max_in_flight_per_caller_connection = 4;
  options.config.limits.max_in_flight_per_service_connection = 6;
  options.config.limits.stream_window_bytes = kStreamWindow;
  // Bob may call only Echo; Alice anything. Services: the default rule (a certificate naming the
  // service).
  Check(options.config.caller_policy.Add("uri:spiffe://stella.test/caller/alice", {"*"}).ok(),
        "policy");
  Check(options.config.caller_policy.Add("uri:spiffe://stella.test/caller/bob", {"echo.v1.Echo/*"})
            .ok(),
        "policy");
  return options;
}

struct Harness {
  explicit Harness(Input& in) : in(in), hub(io, Options()) {
    for (int i = 0; i < 4; ++i) {
      Connect(i);
    }
  }

  // Link slots: 0, 1 callers (alice, bob); 2, 3 services (echo, greeter).
  void Connect(int slot) {
    static const char* const kPaths[] = {"caller/alice", "caller/bob", "service/echo",
                                         "service/greeter"};
    const bool caller = slot < 2;
    links[slot] = std::make_shared<FakeLink>(io, caller, kPaths[slot]);
    if (caller) {
      stella::gateway::StartCallerSession(hub, links[slot], absl::Hours(1), absl::Hours(1));
    } else {
      stella::gateway::StartServiceSession(hub, links[slot], absl::Hours(1), absl::Hours(1));
    }
  }

  void Poll() {
    io.restart();
    io.poll();
  }

  CorrelationId CallId() { return CorrelationIdFromCounter(in.ConsumeIntegralInRange(1, 8)); }

  CorrelationId StreamId(const FakeLink& link) {
    const std::uint64_t last = link.last_stream();
    switch (in.ConsumeIntegralInRange(0, 3)) {
      case 0:
        return CorrelationIdFromCounter(last);
      case 1:
        return CorrelationIdFromCounter(last > 1 ? last - 1 : 1);
      case 2:
        return CorrelationIdFromCounter(last + 1);  // never opened
      default: {
        CorrelationId id{};
        id[0] = in.Byte();  // not a counter id
        id[15] = 1;
        return id;
      }
    }
  }

  std::string Bytes(std::size_t max) { return in.ConsumeString(max); }

  void Hello(FakeLink& link) {
    v1::Hello hello;
    const int role = in.ConsumeIntegralInRange(0, 3);
    hello.set_role(role == 3   ? v1::ROLE_UNSPECIFIED
                   : role == 2 ? (link.caller() ? v1::ROLE_SERVICE : v1::ROLE_CALLER)
                               : (link.caller() ? v1::ROLE_CALLER : v1::ROLE_SERVICE));
    if (!link.caller()) {
      const int name = in.ConsumeIntegralInRange(0, 3);
      hello.set_service_name(name == 0 ? "echo" : name == 1 ? "greeter" : name == 2 ? "" : "admin");
      hello.set_instance_id(in.ConsumeBool() ? "" : Bytes(16));
      const int endpoints = in.ConsumeIntegralInRange(0, 3);
      for (int i = 0; i < endpoints; ++i) {
        v1::Endpoint* endpoint = hello.add_endpoints();
        endpoint->set_method(kMethods[in.ConsumeIntegralInRange(0, kMethodCount - 1)]);
        endpoint->set_default_timeout_ms(in.ConsumeBool() ? 0 : 1);
      }
    }
    if (in.ConsumeBool()) {
      (*hello.mutable_metadata())["region"] = in.ConsumeBool() ? "eu" : "us";
    }
    link.Deliver(FrameType::kHello, 0, CorrelationId{}, hello.SerializeAsString());
  }

  void Request(FakeLink& link) {
    const CorrelationId id = CallId();
    std::string payload;
    if (in.ConsumeIntegralInRange(0, 7) == 0) {
      payload = Bytes(64);  // maybe not an envelope at all
    } else {
      v1::Request request;
      request.set_method(kMethods[in.ConsumeIntegralInRange(0, kMethodCount - 1)]);
      const int timeout = in.ConsumeIntegralInRange(0, 2);
      request.set_timeout_us(timeout == 0 ? 0 : timeout == 1 ? 1 : 3'600'000'000ull);
      if (in.ConsumeBool()) {
        (*request.mutable_metadata())[in.ConsumeBool() ? "stella-caller-identity" : "x-trace"] =
            "forged";
      }
      if (in.ConsumeBool()) {
        request.set_body(std::string(in.ConsumeIntegralInRange<std::size_t>(0, 1500), 'b'));
      }
      payload = request.SerializeAsString();
    }
    link.Deliver(FrameType::kRequest, in.ConsumeIntegralInRange(0, 3), id, payload);
  }

  void Response(FakeLink& link) {
    const CorrelationId id = StreamId(link);
    std::string payload;
    std::uint16_t flags = in.ConsumeIntegralInRange(0, 3);
    if (in.ConsumeBool()) {
      v1::Response response;
      response.set_code((flags & stella::runtime::kFlagError) ? in.ConsumeIntegralInRange(1, 16)
                                                              : 0);
      response.set_message(Bytes(32));
      if (in.ConsumeBool()) {
        response.set_body(std::string(in.ConsumeIntegralInRange<std::size_t>(0, 1800), 'r'));
      }
      payload = response.SerializeAsString();
    } else {
      payload = Bytes(64);
    }
    link.Deliver(FrameType::kResponse, flags, id, payload);
  }

  void Raw(FakeLink& link) {
    const auto type = static_cast<FrameType>(in.ConsumeIntegralInRange(1, 8));  // as decoded
    const std::uint16_t flags = in.ConsumeFlags();
    CorrelationId id{};
    if (in.ConsumeBool()) {
      id = link.caller() ? CallId() : StreamId(link);
    }
    link.Deliver(type, flags, id, Bytes(64));
  }

  void Cancel(FakeLink& link) {
    v1::Cancel cancel;
    cancel.set_code(in.ConsumeIntegralInRange(0, 16));
    cancel.set_reason(in.ConsumeBool() ? std::string(in.ConsumeIntegralInRange(0, 3000), 'c')
                                       : Bytes(16));
    link.Deliver(FrameType::kCancel, 0, link.caller() ? CallId() : StreamId(link),
                 cancel.SerializeAsString());
  }

  void WindowUpdate(FakeLink& link) {
    v1::WindowUpdate update;
    const int grant = in.ConsumeIntegralInRange(0, 2);
    update.set_bytes(grant == 0 ? 0 : grant == 1 ? 1024 : 0x7fffffffu);
    link.Deliver(FrameType::kWindowUpdate, 0, link.caller() ? CallId() : StreamId(link),
                 update.SerializeAsString());
  }

  void ConnectionFrame(FakeLink& link) {
    if (in.ConsumeBool()) {
      v1::Heartbeat heartbeat;
      heartbeat.set_ack(in.ConsumeBool());
      link.Deliver(FrameType::kHeartbeat, 0, CorrelationId{}, heartbeat.SerializeAsString());
    } else {
      v1::Goaway goaway;
      goaway.set_reason("leaving");
      link.Deliver(FrameType::kGoaway, 0, CorrelationId{}, goaway.SerializeAsString());
    }
  }

  void Drain() {
    hub.stopping = true;
    v1::Goaway goaway;
    goaway.set_reason("draining");
    stella::gateway::SendToAll(hub, FrameType::kGoaway, goaway);
  }

  void Step() {
    const int op = in.ConsumeIntegralInRange(0, 12);
    const int slot = in.ConsumeIntegralInRange(0, 3);
    FakeLink& link = *links[slot];
    switch (op) {
      case 0:
        Hello(link);
        break;
      case 1:
      case 2:
        if (link.caller()) {
          Request(link);
        } else {
          Response(link);
        }
        break;
      case 3:
        Raw(link);
        break;
      case 4:
        Cancel(link);
        break;
      case 5:
        WindowUpdate(link);
        break;
      case 6:
        ConnectionFrame(link);
        break;
      case 7:
        link.writable = !link.writable;
        break;
      case 8:
        if (link.closing()) {
          Poll();  // its close handler runs first
          Connect(slot);
        } else {
          link.Close(absl::UnavailableError("the peer went away"));
        }
        break;
      case 9:
        if (in.ConsumeIntegralInRange(0, 7) == 0) {
          Drain();
        }
        break;
      default:
        Poll();
        break;
    }
    for (const auto& instance : hub.reader.Get().instances) {
      instances.insert(instance);
    }
  }

  void Finish() {
    Poll();
    // Every service goes away; every call still open at a connected caller must end.
    for (int slot = 2; slot < 4; ++slot) {
      links[slot]->Close(absl::UnavailableError("the service went away"));
    }
    Poll();
    Check(hub.services.empty(), "a closed service link leaves no session");
    Check(hub.reader.Get().instances.empty() && hub.reader.Get().methods.empty(),
          "a closed service link leaves no route");
    for (int slot = 0; slot < 2; ++slot) {
      if (!links[slot]->closing()) {
        Check(links[slot]->open_calls().empty(),
              "every call a connected caller opened ended with a FINAL response");
      }
    }
    Check(stella::gateway::CallsInFlight(hub) == 0, "no call is left in flight");
    for (int slot = 0; slot < 2; ++slot) {
      links[slot]->Close(absl::UnavailableError("the caller went away"));
    }
    Poll();
    Check(hub.callers.empty(), "a closed caller link leaves no session");
    for (const auto& instance : instances) {
      Check(instance->outstanding.load() == 0, "no outstanding count is left behind");
    }
  }

  Input& in;
  asio::io_context io;
  stella::gateway::SessionHub hub;
  std::array<std::shared_ptr<FakeLink>, 4> links;
  absl::flat_hash_set<std::shared_ptr<stella::gateway::Instance>> instances;  // every one seen
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  trace = std::getenv("STELLA_FUZZ_TRACE") != nullptr;
  spdlog::set_level(trace ? spdlog::level::info : spdlog::level::off);
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  Harness harness(in);
  for (int steps = 0; steps < 256 && in.remaining_bytes() > 0; ++steps) {
    harness.Step();
  }
  harness.Finish();
  return 0;
}
