// The gateway end to end over loopback mutual TLS, with services and callers played by raw
// FramedConnections that speak the wire protocol frame by frame (the service SDK is not built
// yet), so each test controls exactly what crosses the wire.
#include "gateway/gateway.h"

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/admin_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/framed_connection.h"
#include "stella/router/v1/frames.pb.h"
#include "tests/gateway/loopback_gateway.h"
#include "tests/support/loopback.h"
#include "tests/support/status_matchers.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

namespace stella::gateway {
namespace {

namespace v1 = ::stella::router::v1;
using runtime::CorrelationId;
using runtime::FramedConnection;
using runtime::FrameType;
using runtime::FrameView;
using runtime::kFlagError;
using runtime::kFlagFinal;
using runtime::tls::CertificateUsage;
using runtime::tls::TlsContext;
using runtime::tls::TlsOptions;
using runtime::tls::TlsRole;
using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::stella::testing::TempDir;
using ::stella::testing::TestLoop;
using ::stella::testing::TestPki;
using ::testing::HasSubstr;

constexpr char kSayHello[] = "greeter.v1.Greeter/SayHello";
constexpr char kChat[] = "greeter.v1.Greeter/Chat";

CorrelationId Id(std::uint8_t n) {
  CorrelationId id{};
  id[15] = n;
  return id;
}

struct Received {
  FrameType type;
  std::uint16_t flags;
  CorrelationId id;
  std::string payload;
};

// A peer of the gateway: a connection plus everything it received.
struct Peer {
  std::shared_ptr<FramedConnection> connection;
  std::vector<Received> frames;
  std::optional<absl::Status> closed;

  // Frames of `type` received so far.
  std::vector<Received> Of(FrameType type) const {
    std::vector<Received> out;
    for (const Received& frame : frames) {
      if (frame.type == type) {
        out.push_back(frame);
      }
    }
    return out;
  }
};

template <typename Message>
Message Parse(const Received& frame) {
  Message message;
  EXPECT_TRUE(message.ParseFromString(frame.payload));
  return message;
}

class GatewayTest : public ::testing::Test {
 protected:
  GatewayTest() {
    frontend_ = testing::MustMint(testing::LeafSpec("frontend", false, true), &pki_.root);
    CertSpec billing = testing::LeafSpec("billing", false, true);
    billing.dns_names = {"billing"};
    billing_ = testing::MustMint(billing, &pki_.root);
  }

  using CertSpec = runtime::tls::CertSpec;

  runtime::tls::Credentials Creds(const testing::MintedCert& cert, CertificateUsage usage) {
    runtime::tls::CredentialSource source;
    source.certificate_path = dir_.Write("c.pem", TestPki::Pem(cert) + TestPki::KeyPem(cert));
    return *runtime::tls::LoadCredentials(source, usage, absl::Now());
  }

  runtime::tls::TrustBundle Trust() {
    runtime::tls::TrustSource source;
    source.ca_path = dir_.Write("ca.pem", TestPki::Pem(pki_.root));
    return *runtime::tls::LoadTrust(source);
  }

  // Starts a gateway on free ports; `adjust` changes the test defaults first.
  void StartGateway(const std::function<void(GatewayConfig&)>& adjust = nullptr) {
    TlsOptions options;
    options.role = TlsRole::kServer;
    auto tls = *TlsContext::Create(options, Creds(pki_.server, CertificateUsage::kServer), Trust());
    auto gateway = StartLoopbackGateway(loop_.io(), "gw-test", tls, adjust);
    ASSERT_THAT(gateway, IsOk());
    gateway_ = *std::move(gateway);
  }

  // Connects with `cert` to the service or caller listener and starts recording.
  std::unique_ptr<Peer> Connect(const testing::MintedCert& cert, bool service,
                                runtime::ConnectionOptions connection_options = {}) {
    TlsOptions options;
    options.role = TlsRole::kClient;
    options.expected_server_name = "localhost";
    auto tls = *TlsContext::Create(options, Creds(cert, CertificateUsage::kClient), Trust());
    auto connection = loop_.Run(FramedConnection::Connect(
        loop_.executor(), "127.0.0.1", service ? gateway_->service_port() : gateway_->caller_port(),
        tls, connection_options));
    EXPECT_THAT(connection, IsOk());
    auto peer = std::make_unique<Peer>();
    peer->connection = *connection;
    Peer* raw = peer.get();
    peer->connection->Start(
        [raw](const FrameView& frame) {
          raw->frames.push_back({frame.header.type, frame.header.flags, frame.header.correlation_id,
                                 std::string(frame.payload.begin(), frame.payload.end())});
        },
        [raw](const absl::Status& status) { raw->closed = status; });
    return peer;
  }

  // Sends HELLO and waits for HELLO_ACK.
  v1::HelloAck Hello(Peer& peer, const v1::Hello& hello) {
    EXPECT_THAT(peer.connection->Send(FrameType::kHello, 0, CorrelationId{}, hello), IsOk());
    EXPECT_TRUE(loop_.PumpUntil([&] { return !peer.Of(FrameType::kHelloAck).empty(); }));
    return Parse<v1::HelloAck>(peer.Of(FrameType::kHelloAck).front());
  }

  std::unique_ptr<Peer> Service(const testing::MintedCert& cert, const std::string& name,
                                const std::string& region = "") {
    auto peer = Connect(cert, /*service=*/true);
    v1::Hello hello;
    hello.set_role(v1::ROLE_SERVICE);
    hello.set_service_name(name);
    hello.set_instance_id(name + "-" + std::to_string(++instances_));
    if (!region.empty()) {
      (*hello.mutable_metadata())["region"] = region;
    }
    for (const char* method : {kSayHello, kChat}) {
      v1::Endpoint* endpoint = hello.add_endpoints();
      endpoint->set_method(method);
      endpoint->set_request_type("greeter.v1.HelloRequest");
      endpoint->set_response_type("greeter.v1.HelloReply");
      endpoint->set_kind(method == kChat ? v1::CALL_KIND_BIDI_STREAMING : v1::CALL_KIND_UNARY);
    }
    v1::HelloAck ack = Hello(*peer, hello);
    EXPECT_TRUE(ack.accepted()) << ack.reason();
    return peer;
  }

  std::unique_ptr<Peer> Caller(const std::string& region = "",
                               runtime::ConnectionOptions connection_options = {}) {
    auto peer = Connect(frontend_, /*service=*/false, connection_options);
    v1::Hello hello;
    hello.set_role(v1::ROLE_CALLER);
    if (!region.empty()) {
      (*hello.mutable_metadata())["region"] = region;
    }
    v1::HelloAck ack = Hello(*peer, hello);
    EXPECT_TRUE(ack.accepted()) << ack.reason();
    return peer;
  }

  static v1::Request Request(const std::string& method, const std::string& body,
                             std::uint64_t timeout_us = 0) {
    v1::Request request;
    request.set_method(method);
    request.set_body(body);
    request.set_timeout_us(timeout_us);
    return request;
  }

  // Waits until `peer` has received `count` frames of `type`.
  bool WaitFor(Peer& peer, FrameType type, std::size_t count = 1) {
    return loop_.PumpUntil([&] { return peer.Of(type).size() >= count; });
  }

  TestPki pki_;
  TempDir dir_;
  TestLoop loop_;
  testing::MintedCert frontend_;
  testing::MintedCert billing_;
  std::unique_ptr<Gateway> gateway_;
  int instances_ = 0;
};

TEST_F(GatewayTest, UnaryCallIsRoutedAndAnswered) {
  StartGateway();
  auto service = Service(pki_.client, "greeter");
  auto caller = Caller();
  v1::Request request = Request(kSayHello, "world");
  (*request.mutable_metadata())["traceparent"] = "00-abc-def-01";
  (*request.mutable_metadata())["stella-caller-identity"] = "forged";
  ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(7), request), IsOk());

  ASSERT_TRUE(WaitFor(*service, FrameType::kRequest));
  const Received at_service = service->Of(FrameType::kRequest).front();
  EXPECT_NE(at_service.id, Id(7));  // the gateway's own id on the service connection
  EXPECT_TRUE(at_service.flags & kFlagFinal);
  v1::Request forwarded = Parse<v1::Request>(at_service);
  EXPECT_EQ(forwarded.method(), kSayHello);
  EXPECT_EQ(forwarded.body(), "world");
  EXPECT_EQ(forwarded.metadata().at("traceparent"), "00-abc-def-01");
  EXPECT_EQ(forwarded.metadata().at("stella-caller-identity"), "CN=frontend,O=Stella Tests");
  EXPECT_GT(forwarded.timeout_us(), 0u);  // the gateway's default deadline travels with it

  v1::Response response;
  response.set_body("hello, world");
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, kFlagFinal, at_service.id, response),
              IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse));
  const Received at_caller = caller->Of(FrameType::kResponse).front();
  EXPECT_EQ(at_caller.id, Id(7));
  EXPECT_EQ(Parse<v1::Response>(at_caller).body(), "hello, world");
  EXPECT_EQ(gateway_->routes().Snapshot()->instances.front()->outstanding.load(), 0);
}

TEST_F(GatewayTest, UnknownMethodIsNotFound) {
  StartGateway();
  auto caller = Caller();
  ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(1),
                                       Request("nope.v1.Nope/Nothing", "")),
              IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse));
  const Received answer = caller->Of(FrameType::kResponse).front();
  EXPECT_EQ(answer.flags, kFlagFinal | kFlagError);
  v1::Response response = Parse<v1::Response>(answer);
  EXPECT_EQ(response.code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_THAT(response.message(),
              HasSubstr("no service registers the method nope.v1.Nope/Nothing"));
}

TEST_F(GatewayTest, SpoofedServiceNameIsRefused) {
  StartGateway();
  auto impostor = Connect(billing_, /*service=*/true);
  v1::Hello hello;
  hello.set_role(v1::ROLE_SERVICE);
  hello.set_service_name("greeter");
  v1::Endpoint* endpoint = hello.add_endpoints();
  endpoint->set_method(kSayHello);
  v1::HelloAck ack = Hello(*impostor, hello);
  EXPECT_FALSE(ack.accepted());
  EXPECT_EQ(ack.code(), static_cast<int>(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(ack.reason(), HasSubstr("certificate DNS:billing"));
  EXPECT_THAT(ack.reason(), HasSubstr("may not register service \"greeter\""));
  ASSERT_TRUE(loop_.PumpUntil([&] { return impostor->closed.has_value(); }));
  EXPECT_TRUE(gateway_->routes().Snapshot()->instances.empty());
}

TEST_F(GatewayTest, FrameBeforeHelloGetsGoaway) {
  StartGateway();
  auto peer = Connect(frontend_, /*service=*/false);
  ASSERT_THAT(
      peer->connection->Send(FrameType::kRequest, kFlagFinal, Id(1), Request(kSayHello, "")),
      IsOk());
  ASSERT_TRUE(WaitFor(*peer, FrameType::kGoaway));
  v1::Goaway goaway = Parse<v1::Goaway>(peer->Of(FrameType::kGoaway).front());
  EXPECT_EQ(goaway.code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(goaway.reason(), "expected HELLO as the first frame, got REQUEST");
  EXPECT_TRUE(loop_.PumpUntil([&] { return peer->closed.has_value(); }));
}

TEST_F(GatewayTest, SilentPeerIsClosedAtTheHelloDeadline) {
  StartGateway([](GatewayConfig& config) {
    config.callers->tls.handshake_timeout = absl::Milliseconds(200);
  });
  auto peer = Connect(frontend_, /*service=*/false);
  ASSERT_TRUE(WaitFor(*peer, FrameType::kGoaway));
  EXPECT_EQ(Parse<v1::Goaway>(peer->Of(FrameType::kGoaway).front()).code(),
            static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_TRUE(loop_.PumpUntil([&] { return peer->closed.has_value(); }));
}

TEST_F(GatewayTest, DeadlineExceededAtTheCallerAndCancelAtTheService) {
  StartGateway();
  auto service = Service(pki_.client, "greeter");
  auto caller = Caller();
  ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(3),
                                       Request(kSayHello, "slow", /*timeout_us=*/100'000)),
              IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse));
  v1::Response response = Parse<v1::Response>(caller->Of(FrameType::kResponse).front());
  EXPECT_EQ(response.code(), static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  ASSERT_TRUE(WaitFor(*service, FrameType::kCancel));
  EXPECT_EQ(Parse<v1::Cancel>(service->Of(FrameType::kCancel).front()).code(),
            static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  // A late answer from the service is dropped, not delivered and not a violation.
  const CorrelationId late = service->Of(FrameType::kRequest).front().id;
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, kFlagFinal, late, v1::Response()),
              IsOk());
  loop_.PumpUntil([] { return false; }, std::chrono::milliseconds(50));
  EXPECT_EQ(caller->Of(FrameType::kResponse).size(), 1u);
  EXPECT_FALSE(service->closed.has_value());
}

TEST_F(GatewayTest, ServiceDisconnectFailsItsCallsAtOnce) {
  StartGateway();
  auto service = Service(pki_.client, "greeter");
  auto caller = Caller();
  for (std::uint8_t i = 1; i <= 3; ++i) {
    ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(i),
                                         Request(kSayHello, "x", 60'000'000)),
                IsOk());
  }
  ASSERT_TRUE(WaitFor(*service, FrameType::kRequest, 3));
  const absl::Time closed_at = absl::Now();
  service->connection->Close(absl::OkStatus());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse, 3));
  EXPECT_LT(absl::Now() - closed_at, absl::Seconds(5));  // no waiting for the 60 s deadline
  for (const Received& frame : caller->Of(FrameType::kResponse)) {
    v1::Response response = Parse<v1::Response>(frame);
    EXPECT_EQ(response.code(), static_cast<int>(absl::StatusCode::kUnavailable));
    EXPECT_THAT(response.message(),
                HasSubstr("instance \"greeter-1\" of service \"greeter\" disconnected"));
  }
  EXPECT_TRUE(loop_.PumpUntil([&] { return gateway_->routes().Snapshot()->instances.empty(); }));
}

TEST_F(GatewayTest, CallerCancelAndDisconnectReachTheService) {
  StartGateway();
  auto service = Service(pki_.client, "greeter");
  auto caller = Caller();
  ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(1),
                                       Request(kSayHello, "a", 60'000'000)),
              IsOk());
  ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(2),
                                       Request(kSayHello, "b", 60'000'000)),
              IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kRequest, 2));
  v1::Cancel cancel;
  cancel.set_code(static_cast<int>(absl::StatusCode::kCancelled));
  cancel.set_reason("user pressed stop");
  ASSERT_THAT(caller->connection->Send(FrameType::kCancel, 0, Id(1), cancel), IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kCancel));
  EXPECT_EQ(Parse<v1::Cancel>(service->Of(FrameType::kCancel)[0]).reason(), "user pressed stop");

  caller->connection->Close(absl::OkStatus());
  ASSERT_TRUE(WaitFor(*service, FrameType::kCancel, 2));
  EXPECT_EQ(Parse<v1::Cancel>(service->Of(FrameType::kCancel)[1]).reason(),
            "the caller disconnected");
}

TEST_F(GatewayTest, BidirectionalStreamIsRelayedFrameByFrame) {
  StartGateway();
  auto service = Service(pki_.client, "greeter");
  auto caller = Caller();
  ASSERT_THAT(caller->connection->Send(FrameType::kRequest, 0, Id(9), Request(kChat, "one")),
              IsOk());
  v1::Request next;
  next.set_body("two");
  ASSERT_THAT(caller->connection->Send(FrameType::kRequest, 0, Id(9), next), IsOk());
  v1::Request half_close;
  ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(9), half_close), IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kRequest, 3));
  const auto requests = service->Of(FrameType::kRequest);
  EXPECT_EQ(Parse<v1::Request>(requests[1]).body(), "two");
  EXPECT_TRUE(requests[2].flags & kFlagFinal);
  const CorrelationId stream = requests[0].id;
  for (const char* body : {"ONE", "TWO"}) {
    v1::Response response;
    response.set_body(body);
    ASSERT_THAT(service->connection->Send(FrameType::kResponse, 0, stream, response), IsOk());
  }
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, kFlagFinal, stream, v1::Response()),
              IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse, 3));
  const auto responses = caller->Of(FrameType::kResponse);
  EXPECT_EQ(Parse<v1::Response>(responses[0]).body(), "ONE");
  EXPECT_EQ(Parse<v1::Response>(responses[1]).body(), "TWO");
  EXPECT_TRUE(responses[2].flags & kFlagFinal);
  EXPECT_FALSE(Parse<v1::Response>(responses[2]).has_body());
}

TEST_F(GatewayTest, CallsPreferTheCallersRegion) {
  StartGateway();
  auto eu = Service(pki_.client, "greeter", "eu");
  auto us = Service(pki_.client, "greeter", "us");
  auto caller = Caller("us");
  for (std::uint8_t i = 1; i <= 10; ++i) {
    ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(i),
                                         Request(kSayHello, "x", 60'000'000)),
                IsOk());
  }
  ASSERT_TRUE(WaitFor(*us, FrameType::kRequest, 10));
  EXPECT_TRUE(eu->Of(FrameType::kRequest).empty());
}

TEST_F(GatewayTest, CallerInFlightLimitIsResourceExhausted) {
  StartGateway(
      [](GatewayConfig& config) { config.limits.max_in_flight_per_caller_connection = 2; });
  auto service = Service(pki_.client, "greeter");
  auto caller = Caller();
  for (std::uint8_t i = 1; i <= 3; ++i) {
    ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(i),
                                         Request(kSayHello, "x", 60'000'000)),
                IsOk());
  }
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse));
  const Received refused = caller->Of(FrameType::kResponse).front();
  EXPECT_EQ(refused.id, Id(3));
  EXPECT_EQ(Parse<v1::Response>(refused).code(),
            static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_TRUE(WaitFor(*service, FrameType::kRequest, 2));
}

TEST_F(GatewayTest, ResponseForAStreamNeverOpenedIsAViolation) {
  StartGateway();
  auto service = Service(pki_.client, "greeter");
  CorrelationId bogus{};
  bogus[0] = 0xAB;
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, kFlagFinal, bogus, v1::Response()),
              IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kGoaway));
  EXPECT_THAT(Parse<v1::Goaway>(service->Of(FrameType::kGoaway).front()).reason(),
              HasSubstr("RESPONSE for a stream the gateway never opened"));
  EXPECT_TRUE(loop_.PumpUntil([&] { return gateway_->routes().Snapshot()->instances.empty(); }));
}

TEST_F(GatewayTest, ServiceInFlightLimitIsResourceExhausted) {
  StartGateway(
      [](GatewayConfig& config) { config.limits.max_in_flight_per_service_connection = 2; });
  auto service = Service(pki_.client, "greeter");
  auto caller = Caller();
  for (std::uint8_t i = 1; i <= 3; ++i) {
    ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(i),
                                         Request(kSayHello, "x", 60'000'000)),
                IsOk());
  }
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse));
  const Received refused = caller->Of(FrameType::kResponse).front();
  EXPECT_EQ(refused.id, Id(3));
  v1::Response response = Parse<v1::Response>(refused);
  EXPECT_EQ(response.code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(response.message(), HasSubstr("(MaxInFlightPerServiceConnection)"));
  EXPECT_TRUE(WaitFor(*service, FrameType::kRequest, 2));
}

// Protocol violations from three callers (an oversize frame, an unknown frame type, a REQUEST
// that does not parse) close those three connections only: a call in flight on a well-behaved
// caller still completes, and new calls still work.
TEST_F(GatewayTest, ViolationsCloseOnlyTheOffendingConnection) {
  StartGateway([](GatewayConfig& config) { config.callers->max_payload_size = 1024; });
  auto service = Service(pki_.client, "greeter");
  auto good = Caller();
  ASSERT_THAT(good->connection->Send(FrameType::kRequest, kFlagFinal, Id(1),
                                     Request(kSayHello, "before", 60'000'000)),
              IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kRequest));

  runtime::ConnectionOptions loose;
  loose.max_payload_size = 1 << 20;  // lets this peer send what the gateway refuses
  auto oversize = Caller("", loose);
  auto bad_type = Caller();
  auto garbage = Caller();
  const std::vector<std::uint8_t> big(4096, 'x');
  ASSERT_THAT(oversize->connection->SendBytes(FrameType::kRequest, kFlagFinal, Id(1), big), IsOk());
  const std::vector<std::uint8_t> junk = {0xff, 0xff, 0xff, 0xff, 0x0f};
  ASSERT_THAT(bad_type->connection->SendBytes(static_cast<FrameType>(99), 0, Id(1), junk), IsOk());
  ASSERT_THAT(garbage->connection->SendBytes(FrameType::kRequest, kFlagFinal, Id(1), junk), IsOk());

  struct Expected {
    Peer* peer;
    absl::StatusCode code;
    const char* reason;
  };
  for (const Expected& expected : {
           Expected{oversize.get(), absl::StatusCode::kResourceExhausted,
                    "frame header field 'payload length' is 4096 bytes for a REQUEST frame; the "
                    "maximum payload size is 1024 bytes"},
           Expected{bad_type.get(), absl::StatusCode::kInvalidArgument,
                    "frame header field 'type' is 99"},
           Expected{garbage.get(), absl::StatusCode::kInvalidArgument,
                    "REQUEST payload is not a valid Request message"},
       }) {
    ASSERT_TRUE(WaitFor(*expected.peer, FrameType::kGoaway)) << expected.reason;
    v1::Goaway goaway = Parse<v1::Goaway>(expected.peer->Of(FrameType::kGoaway).front());
    EXPECT_EQ(goaway.code(), static_cast<int>(expected.code)) << goaway.reason();
    EXPECT_THAT(goaway.reason(), HasSubstr(expected.reason));
    EXPECT_TRUE(loop_.PumpUntil([&] { return expected.peer->closed.has_value(); }));
  }

  v1::Response answer;
  answer.set_body("after");
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, kFlagFinal,
                                        service->Of(FrameType::kRequest)[0].id, answer),
              IsOk());
  ASSERT_TRUE(WaitFor(*good, FrameType::kResponse));
  EXPECT_EQ(Parse<v1::Response>(good->Of(FrameType::kResponse)[0]).body(), "after");
  ASSERT_THAT(
      good->connection->Send(FrameType::kRequest, kFlagFinal, Id(2), Request(kSayHello, "again")),
      IsOk());
  EXPECT_TRUE(WaitFor(*service, FrameType::kRequest, 2));
  EXPECT_FALSE(good->closed.has_value());
  EXPECT_FALSE(service->closed.has_value());
  EXPECT_EQ(gateway_->caller_connections(), 1u);
}

// A peer that sends past its stream window is cut off, whichever side it is on: the gateway
// never buffers more than a window per stream. Grants it relays widen the window.
TEST_F(GatewayTest, SendingPastTheStreamWindowIsAViolation) {
  StartGateway([](GatewayConfig& config) {
    config.services.max_payload_size = 1024;
    config.callers->max_payload_size = 1024;
    config.limits.stream_window_bytes = 1024;
  });
  auto service = Service(pki_.client, "greeter");
  auto caller = Caller();
  ASSERT_THAT(caller->connection->Send(FrameType::kRequest, 0, Id(5), Request(kChat, "open")),
              IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kRequest));
  const CorrelationId stream = service->Of(FrameType::kRequest)[0].id;

  // The service streams 3 x 400 bytes; the third does not fit the caller's 1024-byte window
  // until the caller grants more, and the grant is relayed.
  v1::Response chunk;
  chunk.set_body(std::string(400, 'r'));
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, 0, stream, chunk), IsOk());
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, 0, stream, chunk), IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse, 2));
  v1::WindowUpdate grant;
  grant.set_bytes(static_cast<std::uint32_t>(chunk.ByteSizeLong()));
  ASSERT_THAT(caller->connection->Send(FrameType::kWindowUpdate, 0, Id(5), grant), IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kWindowUpdate));
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, 0, stream, chunk), IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse, 3));
  EXPECT_FALSE(service->closed.has_value());

  // The fourth is past the window: the service broke the protocol.
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, 0, stream, chunk), IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kGoaway));
  v1::Goaway goaway = Parse<v1::Goaway>(service->Of(FrameType::kGoaway).front());
  EXPECT_EQ(goaway.code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(goaway.reason(), HasSubstr("exceeds the stream's remaining flow-control window"));
  // The caller's call fails at once, naming the instance.
  ASSERT_TRUE(loop_.PumpUntil([&] {
    auto responses = caller->Of(FrameType::kResponse);
    return !responses.empty() && (responses.back().flags & kFlagFinal);
  }));
  EXPECT_EQ(Parse<v1::Response>(caller->Of(FrameType::kResponse).back()).code(),
            static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(caller->closed.has_value());
}

TEST_F(GatewayTest, CallerSendingPastItsWindowOrGrantingZeroIsCutOff) {
  StartGateway([](GatewayConfig& config) {
    config.callers->max_payload_size = 1024;
    config.limits.stream_window_bytes = 1024;
  });
  auto service = Service(pki_.client, "greeter");
  auto greedy = Caller();
  v1::Request chunk;
  chunk.set_body(std::string(600, 'q'));
  chunk.set_method(kChat);
  ASSERT_THAT(greedy->connection->Send(FrameType::kRequest, 0, Id(1), chunk), IsOk());
  chunk.clear_method();
  ASSERT_THAT(greedy->connection->Send(FrameType::kRequest, 0, Id(1), chunk), IsOk());
  ASSERT_TRUE(WaitFor(*greedy, FrameType::kGoaway));
  EXPECT_THAT(Parse<v1::Goaway>(greedy->Of(FrameType::kGoaway).front()).reason(),
              HasSubstr("REQUEST of 603 bytes exceeds the stream's remaining flow-control "
                        "window of"));

  auto zero = Caller();
  ASSERT_THAT(zero->connection->Send(FrameType::kRequest, 0, Id(1), Request(kChat, "x")), IsOk());
  ASSERT_THAT(zero->connection->Send(FrameType::kWindowUpdate, 0, Id(1), v1::WindowUpdate()),
              IsOk());
  ASSERT_TRUE(WaitFor(*zero, FrameType::kGoaway));
  EXPECT_EQ(Parse<v1::Goaway>(zero->Of(FrameType::kGoaway).front()).reason(),
            "WINDOW_UPDATE granting 0 bytes");
  EXPECT_FALSE(service->closed.has_value());
}

// Peers that open TCP and never start TLS are closed at the handshake timeout, counted by
// reason, and a real service registers while they hang around.
TEST_F(GatewayTest, TcpPeersThatNeverSpeakAreClosedAtTheHandshakeTimeout) {
  StartGateway([](GatewayConfig& config) {
    config.services.tls.handshake_timeout = absl::Milliseconds(300);
  });
  namespace asio = boost::asio;
  // 1,000 silent peers hold 2,000 descriptors in this process (both ends): lift the soft limit.
  constexpr int kSilent = 1000;
  rlimit files{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  files.rlim_cur = std::max<rlim_t>(files.rlim_cur, std::min<rlim_t>(files.rlim_max, 4096));
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &files), 0);
  ASSERT_GE(files.rlim_cur, 2 * kSilent + 100u) << "the hard descriptor limit is too low";
  std::vector<std::unique_ptr<asio::ip::tcp::socket>> silent;
  for (int i = 0; i < kSilent; ++i) {
    auto socket = std::make_unique<asio::ip::tcp::socket>(loop_.io());
    socket->connect({asio::ip::make_address("127.0.0.1"), gateway_->service_port()});
    silent.push_back(std::move(socket));
  }
  auto service = Service(pki_.client, "greeter");  // served while 1,000 peers sit silent
  EXPECT_EQ(gateway_->routes().Snapshot()->instances.size(), 1u);

  // Each silent socket sees EOF once the gateway gives up on it.
  int closed = 0;
  std::array<char, 16> byte{};
  for (auto& socket : silent) {
    socket->async_read_some(asio::buffer(byte), [&closed](boost::system::error_code ec,
                                                          std::size_t) { closed += ec ? 1 : 0; });
  }
  ASSERT_TRUE(loop_.PumpUntil([&] { return closed == kSilent; }));
  EXPECT_THAT(gateway_->metrics().Serialize(),
              HasSubstr(absl::StrCat("stella_gateway_handshake_failures_total{reason=\""
                                     "handshake_timeout\"} ",
                                     kSilent)));
  EXPECT_FALSE(service->closed.has_value());
}

// GET `path` from the admin server on `port`; the whole HTTP response as text.
boost::asio::awaitable<std::string> HttpRequest(std::uint16_t port, std::string request) {
  namespace asio = boost::asio;
  asio::ip::tcp::socket socket(co_await asio::this_coro::executor);
  co_await socket.async_connect({asio::ip::make_address("127.0.0.1"), port}, asio::use_awaitable);
  co_await asio::async_write(socket, asio::buffer(request), asio::use_awaitable);
  std::string response;
  boost::system::error_code ec;
  co_await asio::async_read(socket, asio::dynamic_buffer(response),
                            asio::redirect_error(asio::use_awaitable, ec));
  co_return response;  // ends at EOF: the server closes after one response
}

TEST_F(GatewayTest, AdminEndpoints) {
  StartGateway();
  bool ready = false;
  AdminSources sources;
  sources.ready = [&ready] {
    return ready ? absl::OkStatus() : absl::UnavailableError("certificates not loaded");
  };
  sources.metrics = [this] { return gateway_->metrics().Serialize(); };
  sources.routes = [this] { return RoutesJson(*gateway_->routes().Snapshot()); };
  AdminConfig config;
  config.port = 0;
  auto admin = AdminServer::Start(loop_.io(), config, sources);
  ASSERT_THAT(admin, IsOk());
  const std::uint16_t port = (*admin)->port();
  auto get = [&](const std::string& path) {
    return loop_.Run(HttpRequest(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"));
  };

  auto service = Service(pki_.client, "greeter", "eu");
  auto caller = Caller();
  ASSERT_THAT(
      caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(1), Request(kSayHello, "x")),
      IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kRequest));
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, kFlagFinal,
                                        service->Of(FrameType::kRequest)[0].id, v1::Response()),
              IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse));

  EXPECT_THAT(get("/healthz"), HasSubstr("200 OK"));
  EXPECT_THAT(get("/readyz"), HasSubstr("503 Service Unavailable"));
  EXPECT_THAT(get("/readyz"), HasSubstr("not ready: certificates not loaded"));
  ready = true;
  EXPECT_THAT(get("/readyz"), HasSubstr("200 OK"));

  const std::string routes = get("/routes");
  EXPECT_THAT(routes, HasSubstr("application/json"));
  EXPECT_THAT(routes, HasSubstr("\"service\":\"greeter\",\"instance\":\"greeter-1\","
                                "\"region\":\"eu\""));
  EXPECT_THAT(routes, HasSubstr("{\"method\":\"greeter.v1.Greeter/Chat\",\"kind\":"
                                "\"CALL_KIND_BIDI_STREAMING\"}"));

  const std::string metrics = get("/metrics");
  EXPECT_THAT(metrics, HasSubstr("stella_gateway_requests_total{code=\"OK\","
                                 "method=\"greeter.v1.Greeter/SayHello\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("stella_gateway_connections{role=\"service\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("stella_gateway_connections{role=\"caller\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("stella_gateway_request_duration_seconds_count"));

  EXPECT_THAT(get("/nope"), HasSubstr("404 Not Found"));
  EXPECT_THAT(loop_.Run(HttpRequest(port,
                                    "POST /routes HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Length: 0\r\n\r\n")),
              HasSubstr("405 Method Not Allowed"));
}

TEST_F(GatewayTest, UnknownMethodsShareOneMetricsLabel) {
  StartGateway();
  auto caller = Caller();
  for (std::uint8_t i = 1; i <= 3; ++i) {
    ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(i),
                                         Request("random.v1.X/M" + std::to_string(i), "")),
                IsOk());
  }
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse, 3));
  const std::string metrics = gateway_->metrics().Serialize();
  EXPECT_THAT(metrics, HasSubstr("stella_gateway_requests_total{code=\"NOT_FOUND\","
                                 "method=\"(unknown)\"} 3"));
  EXPECT_THAT(metrics, ::testing::Not(HasSubstr("random.v1.X")));
}

TEST_F(GatewayTest, DrainLetsCallsInFlightFinishThenCloses) {
  StartGateway();
  auto service = Service(pki_.client, "greeter");
  auto caller = Caller();
  ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(1),
                                       Request(kSayHello, "in flight", 60'000'000)),
              IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kRequest));
  bool drained = false;
  gateway_->Drain(absl::Seconds(5), [&drained] { drained = true; });

  ASSERT_TRUE(WaitFor(*caller, FrameType::kGoaway));
  ASSERT_TRUE(WaitFor(*service, FrameType::kGoaway));
  v1::Goaway goaway = Parse<v1::Goaway>(caller->Of(FrameType::kGoaway).front());
  EXPECT_EQ(goaway.code(), 0);
  EXPECT_EQ(goaway.drain_timeout_ms(), 5000u);

  // New calls are refused; the one in flight still completes.
  ASSERT_THAT(
      caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(2), Request(kSayHello, "late")),
      IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse));
  EXPECT_EQ(caller->Of(FrameType::kResponse)[0].id, Id(2));
  EXPECT_THAT(Parse<v1::Response>(caller->Of(FrameType::kResponse)[0]).message(),
              HasSubstr("the gateway is draining"));
  EXPECT_FALSE(drained);
  v1::Response done;
  done.set_body("finished");
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, kFlagFinal,
                                        service->Of(FrameType::kRequest)[0].id, done),
              IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse, 2));
  EXPECT_EQ(Parse<v1::Response>(caller->Of(FrameType::kResponse)[1]).body(), "finished");
  ASSERT_TRUE(loop_.PumpUntil([&] { return drained; }));
  EXPECT_TRUE(loop_.PumpUntil([&] { return caller->closed && service->closed; }));
}

TEST_F(GatewayTest, ServiceDrainIsAcknowledgedAndItsCallsInFlightStillFinish) {
  StartGateway();
  auto service = Service(pki_.client, "greeter");
  auto caller = Caller();
  ASSERT_THAT(caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(1),
                                       Request(kSayHello, "in flight", 60'000'000)),
              IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kRequest));

  // The service's host shuts down: it announces a drain and waits for the gateway's answer.
  v1::Goaway drain;
  drain.set_reason("the service is shutting down");
  drain.set_drain_timeout_ms(5000);
  ASSERT_THAT(service->connection->Send(FrameType::kGoaway, 0, CorrelationId{}, drain), IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kGoaway));
  const v1::Goaway ack = Parse<v1::Goaway>(service->Of(FrameType::kGoaway).front());
  EXPECT_EQ(ack.code(), 0);
  EXPECT_THAT(ack.reason(), HasSubstr("drain acknowledged"));
  EXPECT_THAT(ack.reason(), HasSubstr("greeter-1"));
  EXPECT_TRUE(gateway_->routes().Snapshot()->instances.front()->draining.load());

  // No new call is routed to it; the one it holds still reaches the caller.
  ASSERT_THAT(
      caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(2), Request(kSayHello, "late")),
      IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse));
  const Received refused = caller->Of(FrameType::kResponse)[0];
  EXPECT_EQ(refused.id, Id(2));
  EXPECT_EQ(Parse<v1::Response>(refused).code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(service->Of(FrameType::kRequest).size(), 1u);
  v1::Response done;
  done.set_body("finished");
  ASSERT_THAT(service->connection->Send(FrameType::kResponse, kFlagFinal,
                                        service->Of(FrameType::kRequest)[0].id, done),
              IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse, 2));
  EXPECT_EQ(Parse<v1::Response>(caller->Of(FrameType::kResponse)[1]).body(), "finished");

  // A second GOAWAY is not answered again.
  ASSERT_THAT(service->connection->Send(FrameType::kGoaway, 0, CorrelationId{}, drain), IsOk());
  // The gateway reads one connection's frames in order: once the heartbeat is answered, the
  // GOAWAY before it has been handled.
  ASSERT_THAT(service->connection->Send(FrameType::kHeartbeat, 0, CorrelationId{}, v1::Heartbeat{}),
              IsOk());
  ASSERT_TRUE(WaitFor(*service, FrameType::kHeartbeat));
  EXPECT_EQ(service->Of(FrameType::kGoaway).size(), 1u);
}

TEST_F(GatewayTest, SilentServiceIsDroppedAfterThreeHeartbeats) {
  StartGateway(
      [](GatewayConfig& config) { config.services.heartbeat_interval = absl::Milliseconds(100); });
  auto service = Service(pki_.client, "greeter");  // a raw peer: it never answers heartbeats
  // The gateway last heard from it when it read the HELLO, before its HELLO_ACK reached us.
  const absl::Time hello_acked = absl::Now();
  ASSERT_EQ(gateway_->routes().Snapshot()->instances.size(), 1u);
  ASSERT_TRUE(WaitFor(*service, FrameType::kHeartbeat));
  ASSERT_TRUE(loop_.PumpUntil([&] { return service->closed.has_value(); }));
  // Three intervals after that, not before (less the HELLO_ACK's trip, a few ms at most).
  EXPECT_GE(absl::Now() - hello_acked, absl::Milliseconds(280));
  EXPECT_THAT(*service->closed, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_TRUE(loop_.PumpUntil([&] { return gateway_->routes().Snapshot()->instances.empty(); }));
}

TEST_F(GatewayTest, CallerPolicyDeniesWithAReason) {
  CallerPolicy policy;
  ASSERT_THAT(policy.Add("cn:frontend", {"greeter.v1.Greeter/Chat"}), IsOk());
  StartGateway([&policy](GatewayConfig& config) { config.caller_policy = std::move(policy); });
  auto service = Service(pki_.client, "greeter");
  auto caller = Caller();
  ASSERT_THAT(
      caller->connection->Send(FrameType::kRequest, kFlagFinal, Id(1), Request(kSayHello, "x")),
      IsOk());
  ASSERT_TRUE(WaitFor(*caller, FrameType::kResponse));
  v1::Response response = Parse<v1::Response>(caller->Of(FrameType::kResponse).front());
  EXPECT_EQ(response.code(), static_cast<int>(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(response.message(), HasSubstr("caller CN=frontend,O=Stella Tests (CN=frontend,O="
                                            "Stella Tests) may not call "
                                            "greeter.v1.Greeter/SayHello"));
  EXPECT_TRUE(service->Of(FrameType::kRequest).empty());
}

// With a CallerPolicy, a certificate no entry names — here a service's, used on the caller
// listener — is refused at HELLO, with the reason in the HELLO_ACK (Refuse logs it too).
TEST_F(GatewayTest, CallerPolicyRefusesAnIdentityItDoesNotName) {
  CallerPolicy policy;
  ASSERT_THAT(policy.Add("cn:frontend", {"greeter.v1.Greeter/*"}), IsOk());
  StartGateway([&policy](GatewayConfig& config) { config.caller_policy = std::move(policy); });
  auto service = Service(pki_.client, "greeter");
  auto impostor = Connect(pki_.client, /*service=*/false);
  v1::Hello hello;
  hello.set_role(v1::ROLE_CALLER);
  v1::HelloAck ack = Hello(*impostor, hello);
  EXPECT_FALSE(ack.accepted());
  EXPECT_EQ(ack.code(), static_cast<int>(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(ack.reason(), HasSubstr("caller spiffe://example.org/ns/prod/greeter (CN=greeter,"
                                      "O=Stella Tests) is named by no CallerPolicy entry"));
  EXPECT_TRUE(loop_.PumpUntil([&] { return impostor->closed.has_value(); }));
  auto frontend = Caller();  // the caller the policy names is still let in
  EXPECT_FALSE(frontend->closed.has_value());
}

TEST_F(GatewayTest, WrongRoleOnAListenerIsRefused) {
  StartGateway();
  auto peer = Connect(frontend_, /*service=*/true);
  v1::Hello hello;
  hello.set_role(v1::ROLE_CALLER);
  v1::HelloAck ack = Hello(*peer, hello);
  EXPECT_FALSE(ack.accepted());
  EXPECT_THAT(ack.reason(), HasSubstr("this is the service listener"));
}

}  // namespace
}  // namespace stella::gateway
