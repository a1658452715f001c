// The service SDK against a real gateway over loopback mutual TLS: a ServiceHost serving
// handlers, a Channel calling them, every call kind, errors, deadlines and lost connections.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "gateway/gateway.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/async.h"
#include "runtime/tls/certificate_provider.h"
#include "service_sdk/blocking.h"
#include "service_sdk/channel.h"
#include "service_sdk/service_config.h"
#include "service_sdk/service_host.h"
#include "tests/support/loopback.h"
#include "tests/support/status_matchers.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

extern char** environ;

namespace stella::sdk {
namespace {

namespace asio = boost::asio;
namespace v1 = ::stella::router::v1;
using runtime::tls::CertificateUsage;
using runtime::tls::TlsContext;
using runtime::tls::TlsOptions;
using runtime::tls::TlsRole;
using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::stella::testing::TempDir;
using ::stella::testing::TestLoop;
using ::stella::testing::TestPki;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// --- Handlers: plain functions, as the SDK asks ---------------------------------------------

asio::awaitable<absl::Status> Echo(ServerCall& call) {
  absl::StatusOr<std::optional<std::string>> request = co_await call.Read();
  if (!request.ok()) {
    co_return request.status();
  }
  const std::string text = request->value_or("");
  if (text == "fail") {
    co_return absl::FailedPreconditionError("asked to fail");
  }
  if (text == "throw") {
    throw std::runtime_error("boom");
  }
  call.SetResponse("echo: " + text + " from " + call.context().caller_identity());
  co_return absl::OkStatus();
}

// Server streaming: "3" → "1", "2", "3".
asio::awaitable<absl::Status> Count(ServerCall& call) {
  absl::StatusOr<std::optional<std::string>> request = co_await call.Read();
  if (!request.ok()) {
    co_return request.status();
  }
  const int n = std::stoi(request->value_or("0"));
  for (int i = 1; i <= n; ++i) {
    if (absl::Status written = co_await call.Write(std::to_string(i)); !written.ok()) {
      co_return written;
    }
  }
  co_return absl::OkStatus();
}

// Client streaming: joins every request message.
asio::awaitable<absl::Status> Join(ServerCall& call) {
  std::string joined;
  while (true) {
    absl::StatusOr<std::optional<std::string>> message = co_await call.Read();
    if (!message.ok()) {
      co_return message.status();
    }
    if (!message->has_value()) {
      break;
    }
    joined += **message;
  }
  call.SetResponse(joined);
  co_return absl::OkStatus();
}

// Bidirectional: answers each message in upper case.
asio::awaitable<absl::Status> Shout(ServerCall& call) {
  while (true) {
    absl::StatusOr<std::optional<std::string>> message = co_await call.Read();
    if (!message.ok()) {
      co_return message.status();
    }
    if (!message->has_value()) {
      co_return absl::OkStatus();
    }
    if (absl::Status written = co_await call.Write(absl::AsciiStrToUpper(**message));
        !written.ok()) {
      co_return written;
    }
  }
}

// Server streaming of "N:size": N messages of `size` bytes; counts the writes that completed.
int g_flood_writes = 0;
asio::awaitable<absl::Status> Flood(ServerCall& call) {
  absl::StatusOr<std::optional<std::string>> request = co_await call.Read();
  if (!request.ok()) {
    co_return request.status();
  }
  const std::string spec = request->value_or("0:0");
  const int n = std::stoi(spec.substr(0, spec.find(':')));
  const std::size_t size = std::stoul(spec.substr(spec.find(':') + 1));
  for (int i = 0; i < n; ++i) {
    std::string message(size, static_cast<char>('a' + i % 26));
    if (absl::Status written = co_await call.Write(std::move(message)); !written.ok()) {
      co_return written;
    }
    ++g_flood_writes;
  }
  co_return absl::OkStatus();
}

// Never answers: waits (bounded) until the call is cancelled, and records that it was.
int g_cancellations_seen = 0;
asio::awaitable<absl::Status> Hang(ServerCall& call) {
  asio::steady_timer tick(co_await asio::this_coro::executor);
  for (int i = 0; i < 500 && !call.context().cancelled(); ++i) {
    tick.expires_after(std::chrono::milliseconds(10));
    co_await tick.async_wait(asio::use_awaitable);
  }
  if (call.context().cancelled()) {
    ++g_cancellations_seen;
    co_return call.context().cancel_reason();
  }
  co_return absl::OkStatus();
}

// Answers "rested" once g_release_naps is set (polling every 5 ms, for at most 5 s).
bool g_release_naps = false;
asio::awaitable<absl::Status> Nap(ServerCall& call) {
  asio::steady_timer tick(co_await asio::this_coro::executor);
  for (int i = 0; i < 1000 && !g_release_naps && !call.context().cancelled(); ++i) {
    tick.expires_after(std::chrono::milliseconds(5));
    co_await tick.async_wait(asio::use_awaitable);
  }
  if (call.context().cancelled()) {
    co_return call.context().cancel_reason();
  }
  call.SetResponse("rested");
  co_return absl::OkStatus();
}

// A "gateway" that accepts HELLO, announcing 100 ms heartbeats, and then never sends a byte: a
// network path that went quiet without closing.
asio::awaitable<void> SilentGateway(asio::ip::tcp::acceptor* acceptor,
                                    std::shared_ptr<const TlsContext> tls,
                                    std::vector<std::shared_ptr<runtime::FramedConnection>>* kept) {
  for (int i = 0; i < 3; ++i) {
    boost::system::error_code ec;
    auto socket = co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      co_return;
    }
    auto connection = runtime::FramedConnection::FromAccepted(std::move(socket), tls, {});
    if (!(co_await connection->Handshake()).ok()) {
      continue;
    }
    runtime::FramedConnection* raw = connection.get();
    connection->Start(
        [raw](const runtime::FrameView& frame) {
          if (frame.header.type == runtime::FrameType::kHello) {
            v1::HelloAck ack;
            ack.set_accepted(true);
            ack.set_heartbeat_interval_ms(100);
            (void)raw->Send(runtime::FrameType::kHelloAck, 0, runtime::CorrelationId{}, ack);
          }
        },
        [](const absl::Status&) {});
    kept->push_back(std::move(connection));
  }
}

// A TCP proxy on loopback whose forwarding can be cut without closing anything: Silence() makes
// every connection open at that moment drop what it reads, both ways, while its sockets stay up —
// a network path that went silent (a NAT entry expired, a link died). Later connections are
// forwarded normally.
class PathProxy {
 public:
  PathProxy(asio::io_context& io, std::uint16_t upstream)
      : acceptor_(io, {asio::ip::make_address("127.0.0.1"), 0}), upstream_(upstream) {
    asio::co_spawn(io, Accept(), runtime::LogCoroutineFailure("path proxy"));
  }
  ~PathProxy() { Close(); }
  PathProxy(const PathProxy&) = delete;
  PathProxy& operator=(const PathProxy&) = delete;

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::size_t connections() const { return paths_.size(); }

  void Silence() {
    for (auto& path : paths_) {
      path->silent = true;
    }
  }

  void Close() {
    boost::system::error_code ec;
    acceptor_.close(ec);
    for (auto& path : paths_) {
      path->downstream.close(ec);
      path->upstream.close(ec);
    }
  }

 private:
  struct Path {
    explicit Path(asio::ip::tcp::socket accepted)
        : downstream(std::move(accepted)), upstream(downstream.get_executor()) {}
    asio::ip::tcp::socket downstream;
    asio::ip::tcp::socket upstream;
    bool silent = false;
  };

  // Copies `from` to `to` until either closes; a silent path reads and drops. A close is passed
  // on only while the path is not silent.
  static asio::awaitable<void> Pump(std::shared_ptr<Path> path, bool down_to_up) {
    asio::ip::tcp::socket& from = down_to_up ? path->downstream : path->upstream;
    asio::ip::tcp::socket& to = down_to_up ? path->upstream : path->downstream;
    std::vector<char> buffer(16384);
    for (;;) {
      boost::system::error_code ec;
      const std::size_t n = co_await from.async_read_some(
          asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
      if (!ec && path->silent) {
        continue;
      }
      if (!ec) {
        co_await asio::async_write(to, asio::buffer(buffer.data(), n),
                                   asio::redirect_error(asio::use_awaitable, ec));
      }
      if (ec) {
        if (!path->silent) {
          to.close(ec);
        }
        co_return;
      }
    }
  }

  asio::awaitable<void> Accept() {
    for (;;) {
      boost::system::error_code ec;
      auto socket = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        co_return;
      }
      auto path = std::make_shared<Path>(std::move(socket));
      co_await path->upstream.async_connect({asio::ip::make_address("127.0.0.1"), upstream_},
                                            asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        continue;  // the gateway is not there: the accepted socket closes with `path`
      }
      paths_.push_back(path);
      const auto executor = co_await asio::this_coro::executor;
      asio::co_spawn(executor, Pump(path, true), asio::detached);
      asio::co_spawn(executor, Pump(path, false), asio::detached);
    }
  }

  asio::ip::tcp::acceptor acceptor_;
  std::uint16_t upstream_;
  std::vector<std::shared_ptr<Path>> paths_;
};

v1::Endpoint Endpoint(const std::string& method, v1::CallKind kind) {
  v1::Endpoint endpoint;
  endpoint.set_method(method);
  endpoint.set_request_type("test.v1.Text");
  endpoint.set_response_type("test.v1.Text");
  endpoint.set_kind(kind);
  return endpoint;
}

class SdkTest : public ::testing::Test {
 protected:
  SdkTest() {
    frontend_ = testing::MustMint(testing::LeafSpec("frontend", false, true), &pki_.root);
    server_tls_ = Tls(pki_.server, TlsRole::kServer);
    StartGateway();
  }

  std::shared_ptr<const TlsContext> Tls(const testing::MintedCert& cert, TlsRole role) {
    runtime::tls::CredentialSource source;
    source.certificate_path = dir_.Write("c.pem", TestPki::Pem(cert) + TestPki::KeyPem(cert));
    runtime::tls::TrustSource trust;
    trust.ca_path = dir_.Write("ca.pem", TestPki::Pem(pki_.root));
    TlsOptions options;
    options.role = role;
    options.expected_server_name = role == TlsRole::kClient ? "localhost" : "";
    return *TlsContext::Create(
        options,
        *runtime::tls::LoadCredentials(
            source,
            role == TlsRole::kServer ? CertificateUsage::kServer : CertificateUsage::kClient,
            absl::Now()),
        *runtime::tls::LoadTrust(trust));
  }

  void StartGateway(std::uint16_t service_port = 0, std::uint16_t caller_port = 0) {
    gateway::GatewayConfig config;
    // Small frames and windows, so flow control shows with little data.
    config.services.max_payload_size = 64 * 1024;
    config.limits.stream_window_bytes = 128 * 1024;
    config.gateway_id = "gw-sdk-test";
    config.services.listen_address = "127.0.0.1";
    config.services.port = service_port;
    if (heartbeat_interval_ > absl::ZeroDuration()) {
      config.services.heartbeat_interval = heartbeat_interval_;
    }
    config.callers = config.services;
    config.callers->port = caller_port;
    gateway::GatewayOptions options;
    options.config = std::move(config);
    auto tls = server_tls_;
    options.service_tls = [tls] { return tls; };
    options.caller_tls = [tls] { return tls; };
    auto gateway = gateway::Gateway::Start(loop_.io(), std::move(options));
    ASSERT_THAT(gateway, IsOk());
    gateway_ = *std::move(gateway);
  }

  std::shared_ptr<ServiceHost> StartService(const testing::MintedCert& cert,
                                            const std::string& name,
                                            absl::Duration max_delay = absl::Milliseconds(200)) {
    auto tls = Tls(cert, TlsRole::kClient);
    return StartService([tls] { return tls; }, name, max_delay);
  }

  std::shared_ptr<ServiceHost> StartService(std::function<std::shared_ptr<const TlsContext>()> tls,
                                            const std::string& name, absl::Duration max_delay) {
    ServiceHostOptions options;
    options.service_name = name;
    options.gateways = {{"127.0.0.1", gateway_->service_port()}};
    options.tls = std::move(tls);
    options.initial_reconnect_delay = absl::Milliseconds(20);
    options.max_reconnect_delay = max_delay;
    auto host = ServiceHost::Create(loop_.executor(), std::move(options));
    EXPECT_THAT(host->Register(Endpoint("test.v1.Texts/Echo", v1::CALL_KIND_UNARY), Echo), IsOk());
    EXPECT_THAT(
        host->Register(Endpoint("test.v1.Texts/Count", v1::CALL_KIND_SERVER_STREAMING), Count),
        IsOk());
    EXPECT_THAT(
        host->Register(Endpoint("test.v1.Texts/Join", v1::CALL_KIND_CLIENT_STREAMING), Join),
        IsOk());
    EXPECT_THAT(
        host->Register(Endpoint("test.v1.Texts/Shout", v1::CALL_KIND_BIDI_STREAMING), Shout),
        IsOk());
    EXPECT_THAT(host->Register(Endpoint("test.v1.Texts/Hang", v1::CALL_KIND_UNARY), Hang), IsOk());
    EXPECT_THAT(host->Register(Endpoint("test.v1.Texts/Nap", v1::CALL_KIND_UNARY), Nap), IsOk());
    EXPECT_THAT(
        host->Register(Endpoint("test.v1.Texts/Flood", v1::CALL_KIND_SERVER_STREAMING), Flood),
        IsOk());
    host->Start();
    return host;
  }

  // A "greeter" host serving Echo that dials 127.0.0.1 on each of `ports` (not necessarily
  // gateways), retrying every 20–100 ms; not started.
  std::shared_ptr<ServiceHost> DialingHost(const std::vector<std::uint16_t>& ports) {
    ServiceHostOptions options;
    options.service_name = "greeter";
    for (const std::uint16_t port : ports) {
      options.gateways.push_back({"127.0.0.1", port});
    }
    auto tls = Tls(pki_.client, TlsRole::kClient);
    options.tls = [tls] { return tls; };
    options.initial_reconnect_delay = absl::Milliseconds(20);
    options.max_reconnect_delay = absl::Milliseconds(100);
    auto host = ServiceHost::Create(loop_.executor(), std::move(options));
    EXPECT_THAT(host->Register(Endpoint("test.v1.Texts/Echo", v1::CALL_KIND_UNARY), Echo), IsOk());
    return host;
  }

  std::shared_ptr<Channel> Connect(std::vector<GatewayAddress> gateways = {}) {
    ChannelOptions options;
    options.gateways = gateways.empty()
                           ? std::vector<GatewayAddress>{{"127.0.0.1", gateway_->caller_port()}}
                           : std::move(gateways);
    options.initial_reconnect_delay = absl::Milliseconds(20);
    auto tls = Tls(frontend_, TlsRole::kClient);
    options.tls = [tls] { return tls; };
    auto channel = loop_.Run(Channel::Connect(loop_.executor(), options));
    EXPECT_THAT(channel, IsOk());
    return channel.ok() ? *channel : nullptr;
  }

  // Reads every response of `call` until its end; returns them and the final status.
  static asio::awaitable<std::pair<std::vector<std::string>, absl::Status>> ReadAll(
      ClientCall* call) {
    std::vector<std::string> messages;
    while (true) {
      absl::StatusOr<std::optional<std::string>> next = co_await call->Read();
      if (!next.ok()) {
        co_return std::make_pair(messages, next.status());
      }
      if (!next->has_value()) {
        co_return std::make_pair(messages, absl::OkStatus());
      }
      messages.push_back(**next);
    }
  }

  TestPki pki_;
  TempDir dir_;
  TestLoop loop_;
  testing::MintedCert frontend_;
  std::shared_ptr<const TlsContext> server_tls_;
  std::unique_ptr<gateway::Gateway> gateway_;
  absl::Duration heartbeat_interval_ = absl::ZeroDuration();  // zero: the gateway's default
};

TEST_F(SdkTest, UnaryCallsErrorsAndExceptions) {
  auto host = StartService(pki_.client, "greeter");
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);

  absl::StatusOr<std::string> reply = loop_.Run(channel->Call("test.v1.Texts/Echo", "hi"));
  ASSERT_THAT(reply, IsOk());
  EXPECT_EQ(*reply, "echo: hi from CN=frontend,O=Stella Tests");

  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "fail")),
              StatusIs(absl::StatusCode::kFailedPrecondition, "asked to fail"));
  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "throw")),
              StatusIs(absl::StatusCode::kInternal,
                       HasSubstr("the handler of test.v1.Texts/Echo threw an exception: boom")));
  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Missing", "")),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("no service registers the method test.v1.Texts/Missing")));
  // The exception did not hurt the connection.
  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "again")), IsOk());
}

TEST_F(SdkTest, StreamingKinds) {
  auto host = StartService(pki_.client, "greeter");
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);

  auto count = channel->Open("test.v1.Texts/Count", {}, std::string("3"), /*close_send=*/true);
  ASSERT_THAT(count, IsOk());
  auto [numbers, count_status] = loop_.Run(ReadAll(count->get()));
  EXPECT_THAT(count_status, IsOk());
  EXPECT_THAT(numbers, ElementsAre("1", "2", "3"));

  auto join = channel->Open("test.v1.Texts/Join", {}, std::nullopt, /*close_send=*/false);
  ASSERT_THAT(join, IsOk());
  for (const char* part : {"a", "b", "c"}) {
    ASSERT_THAT(loop_.Run((*join)->Write(part)), IsOk());
  }
  ASSERT_THAT((*join)->CloseSend(), IsOk());
  auto [joined, join_status] = loop_.Run(ReadAll(join->get()));
  EXPECT_THAT(join_status, IsOk());
  EXPECT_THAT(joined, ElementsAre("abc"));

  auto shout = channel->Open("test.v1.Texts/Shout", {}, std::string("hey"), /*close_send=*/false);
  ASSERT_THAT(shout, IsOk());
  ASSERT_THAT(loop_.Run((*shout)->Write("you")), IsOk());
  ASSERT_THAT((*shout)->CloseSend(), IsOk());
  auto [shouted, shout_status] = loop_.Run(ReadAll(shout->get()));
  EXPECT_THAT(shout_status, IsOk());
  EXPECT_THAT(shouted, ElementsAre("HEY", "YOU"));
}

TEST_F(SdkTest, SlowStreamReaderStallsOnlyItsOwnStream) {
  g_flood_writes = 0;
  auto host = StartService(pki_.client, "greeter");
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  // 200 messages of 16 KiB (3.2 MB) into a 128 KiB window, and nobody reads them yet.
  auto flood = channel->Open("test.v1.Texts/Flood", {}, std::string("200:16384"), true);
  ASSERT_THAT(flood, IsOk());
  ASSERT_TRUE(loop_.PumpUntil([] { return g_flood_writes >= 5; }));
  loop_.PumpUntil([] { return false; }, std::chrono::milliseconds(100));
  EXPECT_LE(g_flood_writes, 8) << "the handler wrote past the stream window";

  // Meanwhile the same service connection serves 100 unary calls normally.
  for (int i = 0; i < 100; ++i) {
    ASSERT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", std::to_string(i))), IsOk());
  }
  EXPECT_LE(g_flood_writes, 8);

  // Reading the stream lets the handler finish; every message arrives, in order.
  auto [messages, status] = loop_.Run(ReadAll(flood->get()));
  EXPECT_THAT(status, IsOk());
  ASSERT_EQ(messages.size(), 200u);
  for (std::size_t i = 0; i < messages.size(); ++i) {
    ASSERT_EQ(messages[i], std::string(16384, static_cast<char>('a' + i % 26))) << i;
  }
  EXPECT_EQ(g_flood_writes, 200);
}

// Makes `count` unary calls to Echo at once and checks each answer matches its own request.
asio::awaitable<int> ManyCalls(std::shared_ptr<Channel> channel, int first, int count,
                               int* in_flight, int* peak) {
  int correct = 0;
  for (int i = first; i < first + count; ++i) {
    ++*in_flight;
    *peak = std::max(*peak, *in_flight);
    absl::StatusOr<std::string> reply =
        co_await channel->Call("test.v1.Texts/Echo", "n" + std::to_string(i));
    --*in_flight;
    if (reply.ok() &&
        *reply == "echo: n" + std::to_string(i) + " from CN=frontend,O=Stella Tests") {
      ++correct;
    }
  }
  co_return correct;
}

TEST_F(SdkTest, TenThousandConcurrentCallsOverFourServicesNoneLostOrDuplicated) {
  std::vector<std::shared_ptr<ServiceHost>> hosts;
  hosts.reserve(4);
  for (int i = 0; i < 4; ++i) {
    hosts.push_back(StartService(pki_.client, "greeter"));
  }
  ASSERT_TRUE(loop_.PumpUntil([&] {
    return std::all_of(hosts.begin(), hosts.end(),
                       [](const auto& host) { return host->registered_gateways() == 1; });
  }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  // 1,000 coroutines of 10 sequential calls each: up to 1,000 in flight at once, 10,000 in all.
  constexpr int kWorkers = 1000;
  constexpr int kCallsEach = 10;
  int in_flight = 0;
  int peak = 0;
  std::vector<std::optional<int>> results(kWorkers);
  for (int w = 0; w < kWorkers; ++w) {
    loop_.Spawn(ManyCalls(channel, w * kCallsEach, kCallsEach, &in_flight, &peak), &results[w]);
  }
  ASSERT_TRUE(loop_.PumpUntil(
      [&] {
        return std::all_of(results.begin(), results.end(),
                           [](const auto& r) { return r.has_value(); });
      },
      std::chrono::seconds(60)));
  int correct = 0;
  for (const auto& r : results) {
    correct += *r;
  }
  EXPECT_EQ(correct, kWorkers * kCallsEach);
  EXPECT_GE(peak, kWorkers / 2);
  // Every service took part, and the gateway's books balance.
  std::size_t handled = 0;
  for (const auto& host : hosts) {
    EXPECT_GT(host->calls_handled(), 0u);
    handled += host->calls_handled();
  }
  EXPECT_EQ(handled, static_cast<std::size_t>(kWorkers * kCallsEach));
  for (const auto& instance : gateway_->routes().Snapshot()->instances) {
    EXPECT_EQ(instance->outstanding.load(), 0);
  }
  const std::string metrics = gateway_->metrics().Serialize();
  EXPECT_THAT(metrics, HasSubstr("stella_gateway_requests_total{code=\"OK\","
                                 "method=\"test.v1.Texts/Echo\"} 10000"));
}

TEST_F(SdkTest, DeadlineReachesBothSides) {
  g_cancellations_seen = 0;
  auto host = StartService(pki_.client, "greeter");
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  CallOptions options;
  options.timeout = absl::Milliseconds(100);
  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Hang", "", options)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->calls_in_flight() == 0; }));
  EXPECT_EQ(g_cancellations_seen, 1);
}

TEST_F(SdkTest, ServiceGoingAwayFailsItsCallsAtOnce) {
  auto host = StartService(pki_.client, "greeter");
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  CallOptions options;
  options.timeout = absl::Seconds(60);
  auto call = channel->Open("test.v1.Texts/Hang", options, std::string(""), true);
  ASSERT_THAT(call, IsOk());
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->calls_in_flight() == 1; }));
  const absl::Time stopped_at = absl::Now();
  host->Shutdown();
  auto [messages, status] = loop_.Run(ReadAll(call->get()));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable,
                               HasSubstr("of service \"greeter\" disconnected")));
  EXPECT_LT(absl::Now() - stopped_at, absl::Seconds(5));
}

TEST_F(SdkTest, ServiceReregistersAfterTheGatewayRestarts) {
  auto host = StartService(pki_.client, "greeter");
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  const std::uint16_t port = gateway_->service_port();
  gateway_.reset();
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 0; }));
  StartGateway(port);  // the same port: the host keeps dialling it
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "back")), IsOk());
}

// A gateway restart brings 500 registered services back at the same moment: every one
// re-registers, without a single failed handshake (backoff with full jitter spreads the dials).
TEST_F(SdkTest, FiveHundredServicesReconnectAfterAGatewayRestart) {
  constexpr std::size_t kServices = 500;
  auto tls = Tls(pki_.client, TlsRole::kClient);
  std::vector<std::shared_ptr<ServiceHost>> hosts;
  for (std::size_t i = 0; i < kServices; ++i) {
    hosts.push_back(StartService([tls] { return tls; }, "greeter", absl::Seconds(1)));
  }
  auto registered = [&] {
    return static_cast<std::size_t>(std::count_if(hosts.begin(), hosts.end(), [](const auto& host) {
      return host->registered_gateways() == 1;
    }));
  };
  ASSERT_TRUE(loop_.PumpUntil([&] { return registered() == kServices; }, std::chrono::seconds(120)))
      << registered() << " of " << kServices << " registered";
  const std::uint16_t port = gateway_->service_port();
  gateway_.reset();
  ASSERT_TRUE(loop_.PumpUntil([&] { return registered() == 0; }, std::chrono::seconds(30)));

  StartGateway(port);
  const absl::Time restarted = absl::Now();
  ASSERT_TRUE(loop_.PumpUntil([&] { return registered() == kServices; }, std::chrono::seconds(120)))
      << registered() << " of " << kServices << " re-registered";
  const absl::Duration took = absl::Now() - restarted;
  EXPECT_EQ(gateway_->routes().Snapshot()->instances.size(), kServices);
  EXPECT_THAT(gateway_->metrics().Serialize(),
              Not(HasSubstr("stella_gateway_handshake_failures_total{")));
  std::printf("gateway restart: %zu services re-registered in %s, no failed handshake\n", kServices,
              absl::FormatDuration(took).c_str());
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "back")), IsOk());
  channel->Close();
  for (auto& host : hosts) {
    host->Shutdown();
  }
}

TEST_F(SdkTest, SilentGatewayIsDetectedAndRedialled) {
  asio::ip::tcp::acceptor silent(loop_.io(), {asio::ip::make_address("127.0.0.1"), 0});
  std::vector<std::shared_ptr<runtime::FramedConnection>> kept;
  asio::co_spawn(loop_.io(), SilentGateway(&silent, server_tls_, &kept),
                 runtime::LogCoroutineFailure("silent gateway"));
  auto host = DialingHost({silent.local_endpoint().port()});
  host->Start();
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  // After three silent heartbeat intervals (300 ms) the host gives up on it and dials again.
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->connection_attempts() >= 2; }));
  host->Shutdown();
  for (auto& connection : kept) {
    connection->Close(absl::OkStatus());
  }
}

// The path between a service and the gateway goes silent without closing (a proxy in between
// stops forwarding both ways; every socket stays open). Each side declares the other gone 3
// heartbeat intervals after the last frame it received: the gateway drops the instance and fails
// its call in flight with UNAVAILABLE, the service dials again (through the proxy, which forwards
// new connections) and serves.
TEST_F(SdkTest, SilentPathIsDetectedOnBothSidesWithinThreeHeartbeats) {
  constexpr absl::Duration kInterval = absl::Milliseconds(400);
  gateway_.reset();
  heartbeat_interval_ = kInterval;
  StartGateway();
  PathProxy proxy(loop_.io(), gateway_->service_port());
  auto host = DialingHost({proxy.port()});
  ASSERT_THAT(host->Register(Endpoint("test.v1.Texts/Hang", v1::CALL_KIND_UNARY), Hang), IsOk());
  host->Start();
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  ASSERT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "before")), IsOk());
  const std::shared_ptr<gateway::Instance> before = gateway_->routes().Snapshot()->instances.at(0);

  CallOptions patient;
  patient.timeout = absl::Seconds(30);
  std::optional<absl::StatusOr<std::string>> hanging;
  loop_.Spawn(channel->Call("test.v1.Texts/Hang", "", patient), &hanging);
  ASSERT_TRUE(loop_.PumpUntil([&] { return before->outstanding.load() == 1; }));

  const absl::Time silent_at = absl::Now();
  proxy.Silence();
  std::optional<absl::Duration> gateway_gave_up, call_failed, service_redialled;
  const std::size_t attempts = host->connection_attempts();
  ASSERT_TRUE(loop_.PumpUntil(
      [&] {
        const auto instances = gateway_->routes().Snapshot()->instances;
        if (!gateway_gave_up &&
            std::find(instances.begin(), instances.end(), before) == instances.end()) {
          gateway_gave_up = absl::Now() - silent_at;
        }
        if (!call_failed && hanging.has_value()) {
          call_failed = absl::Now() - silent_at;
        }
        if (!service_redialled && host->connection_attempts() > attempts) {
          service_redialled = absl::Now() - silent_at;
        }
        return gateway_gave_up && call_failed && service_redialled;
      },
      std::chrono::seconds(10)));
  std::printf(
      "silent path, heartbeat interval %s: the gateway dropped the instance after %s, the call in "
      "flight failed after %s, the service dialled again after %s\n",
      absl::FormatDuration(kInterval).c_str(), absl::FormatDuration(*gateway_gave_up).c_str(),
      absl::FormatDuration(*call_failed).c_str(), absl::FormatDuration(*service_redialled).c_str());
  // Each side gives up 3 intervals after the last frame it received, and the last frame came at
  // most one interval before the path went silent: so between 2 and 3 intervals after it, with
  // room for a loaded machine (sanitizer builds) on top.
  for (const absl::Duration took : {*gateway_gave_up, *service_redialled}) {
    EXPECT_GE(took, 2 * kInterval);
    EXPECT_LE(took, 3 * kInterval + kInterval / 2);
  }
  EXPECT_LE(*call_failed - *gateway_gave_up, absl::Milliseconds(100));
  ASSERT_FALSE(hanging->ok());
  EXPECT_EQ(hanging->status().code(), absl::StatusCode::kUnavailable) << hanging->status();
  EXPECT_THAT(hanging->status().message(), HasSubstr("greeter"));

  // The service is back through a new path, and calls flow again.
  ASSERT_TRUE(
      loop_.PumpUntil([&] { return gateway_->routes().Snapshot()->instances.size() == 1; }));
  EXPECT_NE(gateway_->routes().Snapshot()->instances.at(0), before);
  EXPECT_GE(proxy.connections(), 2u);
  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "after")), IsOk());
  channel->Close();
  host->Shutdown();
  proxy.Close();
}

TEST_F(SdkTest, TwoGatewaysOneGoesAwayCallsThroughTheOtherGoOn) {
  std::unique_ptr<gateway::Gateway> first = std::move(gateway_);
  StartGateway();
  std::unique_ptr<gateway::Gateway> second = std::move(gateway_);
  auto host = DialingHost({first->service_port(), second->service_port()});
  host->Start();
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 2; }));

  gateway_ = std::move(second);
  auto channel = Connect();  // through the second gateway
  ASSERT_NE(channel, nullptr);
  first.reset();  // the first replica goes away
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  for (int i = 0; i < 10; ++i) {
    EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "still here")), IsOk());
  }
}

TEST_F(SdkTest, ServiceConfiguredFromATlsClientSection) {
  const std::string cert = dir_.Write("svc/greeter.crt", TestPki::Pem(pki_.client));
  const std::string key = dir_.Write("svc/greeter.key", TestPki::KeyPem(pki_.client, "pw"));
  const std::string ca = dir_.Write("svc/ca.crt", TestPki::Pem(pki_.root));
  const std::string yaml =
      "TlsClient:\n"
      "  GatewayHost: 127.0.0.1\n"
      "  GatewayPort: " +
      std::to_string(gateway_->service_port()) +
      "\n"
      "  ClientCertificatePath: " +
      cert +
      "\n"
      "  ClientCertificateKeyPath: " +
      key +
      "\n"
      "  ClientCertificatePassword: ${KEY_PASSWORD}\n"
      "  ExpectedServerName: localhost\n"
      "  ServerCaCertificatePath: " +
      ca +
      "\n"
      "  Region: eu-west\n"
      "  ServiceVersion: 1.2.3\n";
  auto file = runtime::ConfigFile::Parse(yaml, "service.yaml", [](const std::string& name) {
    return name == "KEY_PASSWORD" ? std::optional<std::string>("pw") : std::nullopt;
  });
  ASSERT_THAT(file, IsOk());
  auto section = file->root().Section("TlsClient");
  ASSERT_THAT(section, IsOk());
  auto config = runtime::tls::ParseTlsClientConfig(**section, /*dev_mode=*/false);
  ASSERT_THAT(config, IsOk());
  auto setup = SetUpService(*config, "greeter");
  ASSERT_THAT(setup, IsOk());
  auto host = ServiceHost::Create(loop_.executor(), setup->options);
  ASSERT_THAT(host->Register(Endpoint("test.v1.Texts/Echo", v1::CALL_KIND_UNARY), Echo), IsOk());
  host->Start();
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  const auto instances = gateway_->routes().Snapshot()->instances;
  ASSERT_EQ(instances.size(), 1u);
  EXPECT_EQ(instances[0]->region, "eu-west");
  EXPECT_EQ(instances[0]->version, "1.2.3");
  host->Shutdown();
}

TEST_F(SdkTest, SetUpRefusesAnUnusableCertificate) {
  runtime::tls::TlsClientConfig config;
  config.gateways = {{"127.0.0.1", 1}};
  config.certificate.certificate_path = dir_.Write("bad.crt", TestPki::Pem(pki_.client));
  config.certificate.key_path = dir_.Write("bad.key", TestPki::KeyPem(pki_.server));
  config.tls.trust.ca_path = dir_.Write("ca.crt", TestPki::Pem(pki_.root));
  EXPECT_THAT(SetUpService(config, "greeter"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the private key does not match the certificate")));
}

TEST_F(SdkTest, RefusedRegistrationIsNotRetriedInAHotLoop) {
  // The greeter certificate claims to be "billing": refused, and retried only after the maximum
  // delay (500 ms here) instead of the 20 ms backoff start, so 700 ms see at most two attempts.
  auto host = StartService(pki_.client, "billing", absl::Milliseconds(500));
  loop_.PumpUntil([] { return false; }, std::chrono::milliseconds(700));
  EXPECT_EQ(host->registered_gateways(), 0u);
  EXPECT_GE(host->connection_attempts(), 1u);
  EXPECT_LE(host->connection_attempts(), 2u);
  EXPECT_TRUE(gateway_->routes().Snapshot()->instances.empty());
  host->Shutdown();
}

}  // namespace
}  // namespace stella::sdk

namespace stella::sdk {
namespace {

TEST_F(SdkTest, ChannelFailsOverToTheNextGateway) {
  std::unique_ptr<gateway::Gateway> first = std::move(gateway_);
  StartGateway();
  std::unique_ptr<gateway::Gateway> second = std::move(gateway_);
  ServiceHostOptions options;
  options.service_name = "greeter";
  options.gateways = {{"127.0.0.1", first->service_port()}, {"127.0.0.1", second->service_port()}};
  auto tls = Tls(pki_.client, TlsRole::kClient);
  options.tls = [tls] { return tls; };
  options.initial_reconnect_delay = absl::Milliseconds(20);
  auto host = ServiceHost::Create(loop_.executor(), std::move(options));
  ASSERT_THAT(host->Register(Endpoint("test.v1.Texts/Echo", v1::CALL_KIND_UNARY), Echo), IsOk());
  host->Start();
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 2; }));

  const std::string first_address = absl::StrCat("127.0.0.1:", first->caller_port());
  const std::string second_address = absl::StrCat("127.0.0.1:", second->caller_port());
  auto channel =
      Connect({{"127.0.0.1", first->caller_port()}, {"127.0.0.1", second->caller_port()}});
  ASSERT_NE(channel, nullptr);
  EXPECT_EQ(channel->gateway(), first_address);
  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "one")), IsOk());

  first.reset();  // the preferred gateway goes away: calls on it fail, later ones move on
  ASSERT_TRUE(loop_.PumpUntil([&] { return channel->gateway() != first_address; }));
  CallOptions ready;  // waits for the reconnection instead of failing fast
  ready.wait_for_ready = true;
  ready.timeout = absl::Seconds(10);
  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "two", ready)), IsOk());
  EXPECT_EQ(channel->gateway(), second_address);
  EXPECT_THAT(channel->last_error(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(first_address)));
  for (int i = 0; i < 5; ++i) {
    EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "three")), IsOk());
  }
}

TEST_F(SdkTest, ChannelWithNoGatewayFailsFastAndNamesEachOne) {
  asio::ip::tcp::acceptor closed(loop_.io(), {asio::ip::make_address("127.0.0.1"), 0});
  const std::uint16_t dead_port = closed.local_endpoint().port();
  closed.close();
  ChannelOptions options;
  options.gateways = {{"127.0.0.1", dead_port}, {"127.0.0.1", dead_port}};
  auto tls = Tls(frontend_, TlsRole::kClient);
  options.tls = [tls] { return tls; };
  auto channel = loop_.Run(Channel::Connect(loop_.executor(), options));
  EXPECT_THAT(channel, StatusIs(absl::StatusCode::kUnavailable,
                                HasSubstr("no gateway accepted the channel: ")));
  options.gateways.clear();
  EXPECT_THAT(loop_.Run(Channel::Connect(loop_.executor(), options)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gateways is empty")));
}

TEST_F(SdkTest, ShutdownLetsCallsInFlightFinish) {
  g_release_naps = false;
  auto host = StartService(pki_.client, "greeter");
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  auto napping = channel->Open("test.v1.Texts/Nap", {}, std::string(""), true);
  ASSERT_THAT(napping, IsOk());
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->calls_in_flight() == 1; }));

  bool done = false;
  host->Shutdown(absl::Seconds(10), [&done] { done = true; });
  // The gateway routes nothing new here once it has the GOAWAY.
  ASSERT_TRUE(loop_.PumpUntil(
      [&] { return gateway_->routes().Snapshot()->instances.front()->draining.load(); }));
  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "late")),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(done);
  g_release_naps = true;
  auto [messages, status] = loop_.Run(ReadAll(napping->get()));
  EXPECT_THAT(status, IsOk());
  EXPECT_THAT(messages, ElementsAre("rested"));
  ASSERT_TRUE(loop_.PumpUntil([&] { return done; }));
  EXPECT_TRUE(loop_.PumpUntil([&] { return gateway_->routes().Snapshot()->instances.empty(); }));
}

TEST_F(SdkTest, ShutdownCancelsWhatOutlivesTheGracePeriod) {
  g_cancellations_seen = 0;
  auto host = StartService(pki_.client, "greeter");
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);
  auto hanging = channel->Open("test.v1.Texts/Hang", {}, std::string(""), true);
  ASSERT_THAT(hanging, IsOk());
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->calls_in_flight() == 1; }));
  bool done = false;
  host->Shutdown(absl::Milliseconds(100), [&done] { done = true; });
  ASSERT_TRUE(loop_.PumpUntil([&] { return done; }));
  auto [messages, status] = loop_.Run(ReadAll(hanging->get()));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable));
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->calls_in_flight() == 0; }));
  EXPECT_EQ(g_cancellations_seen, 1);
}

TEST_F(SdkTest, RefusedCertificateIsRetriedAsSoonAsTheProviderHasANewOne) {
  // A certificate for "billing" may not register "greeter". The maximum delay is a minute, but
  // the host tries again as soon as its certificate source has a new snapshot.
  runtime::tls::CertSpec billing = testing::LeafSpec("billing", false, true);
  billing.dns_names = {"billing"};
  auto current = std::make_shared<std::shared_ptr<const TlsContext>>(
      Tls(testing::MustMint(billing, &pki_.root), TlsRole::kClient));
  auto host = StartService([current] { return *current; }, "greeter", absl::Minutes(1));
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->connection_attempts() == 1; }));
  loop_.PumpUntil([] { return false; }, std::chrono::milliseconds(300));
  EXPECT_EQ(host->registered_gateways(), 0u);
  EXPECT_EQ(host->connection_attempts(), 1u);  // no retry loop

  *current = Tls(pki_.client, TlsRole::kClient);  // the operator fixed the certificate
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  EXPECT_EQ(host->connection_attempts(), 2u);
  host->Shutdown();
}

// A blocking handler runs on the pool: while it blocks, other calls on the same connection are
// served; its result, its exception and the call's cancellation all reach the right place.
TEST_F(SdkTest, BlockingHandlersRunOnThePoolAndNeverStallTheConnection) {
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  std::atomic<bool> blocked{false};
  std::atomic<bool> saw_cancel{false};
  BlockingPool pool(2);
  auto host = StartService(pki_.client, "greeter");
  host->Shutdown();  // replaced by one with the blocking methods
  ServiceHostOptions options;
  options.service_name = "greeter";
  options.gateways = {{"127.0.0.1", gateway_->service_port()}};
  auto tls = Tls(pki_.client, TlsRole::kClient);
  options.tls = [tls] { return tls; };
  host = ServiceHost::Create(loop_.executor(), std::move(options));
  ASSERT_THAT(host->Register(Endpoint("test.v1.Texts/Echo", v1::CALL_KIND_UNARY), Echo), IsOk());
  ASSERT_THAT(host->Register(Endpoint("test.v1.Texts/Lookup", v1::CALL_KIND_UNARY),
                             pool.Unary([&](const CallContext& context,
                                            const std::string& key) -> absl::StatusOr<std::string> {
                               if (key == "throw") {
                                 throw std::runtime_error("driver crashed");
                               }
                               if (key == "wait-for-cancel") {
                                 for (int i = 0; i < 500 && !context.cancelled(); ++i) {
                                   std::this_thread::sleep_for(std::chrono::milliseconds(10));
                                 }
                                 saw_cancel = context.cancelled();
                                 return absl::CancelledError("gave up");
                               }
                               blocked = true;
                               opened.wait_for(std::chrono::seconds(10));  // a slow driver
                               return "row for " + key + " via " + context.caller_identity();
                             })),
              IsOk());
  host->Start();
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);

  auto slow = channel->Open("test.v1.Texts/Lookup", {}, std::string("k1"), true);
  ASSERT_THAT(slow, IsOk());
  ASSERT_TRUE(loop_.PumpUntil([&] { return blocked.load(); }));
  for (int i = 0; i < 20; ++i) {  // served while Lookup blocks its pool thread
    EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Echo", "meanwhile")), IsOk());
  }
  gate.set_value();
  auto [messages, status] = loop_.Run(ReadAll(slow->get()));
  EXPECT_THAT(status, IsOk());
  EXPECT_THAT(messages, ElementsAre("row for k1 via CN=frontend,O=Stella Tests"));

  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Lookup", "throw")),
              StatusIs(absl::StatusCode::kInternal,
                       HasSubstr("the handler of test.v1.Texts/Lookup threw an exception: driver "
                                 "crashed")));
  CallOptions short_deadline;
  short_deadline.timeout = absl::Milliseconds(100);
  EXPECT_THAT(loop_.Run(channel->Call("test.v1.Texts/Lookup", "wait-for-cancel", short_deadline)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  ASSERT_TRUE(loop_.PumpUntil([&] { return host->calls_in_flight() == 0; }));
  EXPECT_TRUE(saw_cancel.load());
  host->Shutdown();
}

// A child process of the test, killed with SIGKILL (if still running) when it goes out of scope.
class ChildProcess {
 public:
  explicit ChildProcess(std::vector<std::string> args) {
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (std::string& arg : args) {
      argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, args[0].c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
      pid_ = -1;
    }
  }
  ~ChildProcess() { Kill(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  void Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
};

// stella-test-service serving test.v1.Texts as "greeter".
class ServiceProcess : public ChildProcess {
 public:
  ServiceProcess(const std::string& config, const std::string& instance)
      : ChildProcess({std::string(STELLA_BINARY_DIR) + "/stella-test-service", "--config=" + config,
                      "--name=greeter", "--instance=" + instance}) {}
};

// How long the callers may wait to learn that their service died. The sanitizers slow every
// step down several times; the bound the issue sets is for a normal build.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr absl::Duration kFailFastBound = absl::Seconds(2);
#else
constexpr absl::Duration kFailFastBound = absl::Milliseconds(200);
#endif

// Reads `call` to its end and records when it ended and how.
struct Outcome {
  absl::Time ended = absl::InfiniteFuture();
  absl::Status status;
  bool done = false;
};
asio::awaitable<void> Await(std::unique_ptr<ClientCall> call, Outcome* outcome) {
  absl::StatusOr<std::optional<std::string>> response = co_await call->Read();
  outcome->ended = absl::Now();
  outcome->status = response.status();
  outcome->done = true;
}

// kill -9 of a service process with 1,000 calls in flight over two instances: every call on the
// killed one ends with UNAVAILABLE naming it, within kFailFastBound; the other instance keeps its
// calls and serves new ones.
TEST_F(SdkTest, KilledServiceProcessFailsItsCallsAtOnce) {
  const std::string cert = dir_.Write("proc/greeter.crt", TestPki::Pem(pki_.client));
  const std::string key = dir_.Write("proc/greeter.key", TestPki::KeyPem(pki_.client));
  const std::string ca = dir_.Write("proc/ca.crt", TestPki::Pem(pki_.root));
  const std::string config = dir_.Write(
      "proc/service.yaml",
      absl::StrCat("TlsClient:\n  Gateways: [\"127.0.0.1:", gateway_->service_port(),
                   "\"]\n  ClientCertificatePath: ", cert, "\n  ClientCertificateKeyPath: ", key,
                   "\n  ServerCaCertificatePath: ", ca,
                   "\n  ExpectedServerName: localhost\n"
                   "  InitialReconnectDelayMs: 50\n"));
  ServiceProcess victim(config, "victim");
  ServiceProcess survivor(config, "survivor");
  ASSERT_TRUE(victim.started() && survivor.started());
  ASSERT_TRUE(loop_.PumpUntil([&] { return gateway_->routes().Snapshot()->instances.size() == 2; },
                              std::chrono::seconds(20)));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);

  constexpr int kCalls = 1000;
  std::vector<Outcome> outcomes(kCalls);
  CallOptions options;
  options.timeout = absl::Seconds(60);
  for (int i = 0; i < kCalls; ++i) {
    auto call = channel->Open("test.v1.Texts/Hang", options, std::string(""), true);
    ASSERT_THAT(call, IsOk());
    asio::co_spawn(loop_.io(), Await(*std::move(call), &outcomes[i]),
                   runtime::LogCoroutineFailure("await call"));
  }
  auto outstanding = [&](const std::string& instance) -> std::int64_t {
    for (const auto& candidate : gateway_->routes().Snapshot()->instances) {
      if (candidate->instance_id == instance) {
        return candidate->outstanding.load();
      }
    }
    return -1;
  };
  ASSERT_TRUE(
      loop_.PumpUntil([&] { return outstanding("victim") + outstanding("survivor") == kCalls; },
                      std::chrono::seconds(20)));
  const std::int64_t on_victim = outstanding("victim");
  ASSERT_GT(on_victim, 0);
  ASSERT_LT(on_victim, kCalls);

  const absl::Time killed_at = absl::Now();
  victim.Kill();
  auto ended = [&] {
    return std::count_if(outcomes.begin(), outcomes.end(),
                         [](const Outcome& outcome) { return outcome.done; });
  };
  ASSERT_TRUE(loop_.PumpUntil([&] { return ended() >= on_victim; }, std::chrono::seconds(10)));
  absl::Duration slowest = absl::ZeroDuration();
  for (const Outcome& outcome : outcomes) {
    if (outcome.done) {
      EXPECT_THAT(outcome.status,
                  StatusIs(absl::StatusCode::kUnavailable,
                           HasSubstr("instance \"victim\" of service \"greeter\"")));
      slowest = std::max(slowest, outcome.ended - killed_at);
    }
  }
  std::printf("kill -9 with %d calls in flight: %lld calls failed, the last %s after the kill\n",
              kCalls, static_cast<long long>(on_victim), absl::FormatDuration(slowest).c_str());
  EXPECT_LT(slowest, kFailFastBound);

  // The survivor still holds its calls, and serves new ones.
  loop_.PumpUntil([] { return false; }, std::chrono::milliseconds(100));
  EXPECT_EQ(ended(), on_victim);
  EXPECT_EQ(outstanding("survivor"), kCalls - on_victim);
  absl::StatusOr<std::string> echo = loop_.Run(channel->Call("test.v1.Texts/Echo", "x"));
  ASSERT_THAT(echo, IsOk());
  EXPECT_EQ(*echo, "survivor: x");
  channel->Close();
  ASSERT_TRUE(loop_.PumpUntil([&] { return ended() == kCalls; }));
}

// Load for the rotation test: calls Echo back to back until `*stop`, counting the outcomes.
asio::awaitable<void> EchoUntilStopped(std::shared_ptr<Channel> channel, const bool* stop,
                                       int* succeeded, std::vector<absl::Status>* failures,
                                       int* running) {
  while (!*stop) {
    absl::StatusOr<std::string> answer = co_await channel->Call("test.v1.Texts/Echo", "x");
    if (answer.ok()) {
      ++*succeeded;
    } else {
      failures->push_back(answer.status());
    }
  }
  --*running;
}

// The gateway's certificate, the CA bundle everybody trusts and a service's certificate are each
// replaced 20 times while 64 calls are kept in flight: no call fails. After every round a new
// caller connection and a new service instance handshake against what was just rotated in.
TEST_F(SdkTest, RotationUnderLoadLosesNoCall) {
  using runtime::tls::CertificateProvider;
  const std::string gateway_cert = dir_.Write("rot/gateway.crt", TestPki::Pem(pki_.server));
  const std::string gateway_key = dir_.Write("rot/gateway.key", TestPki::KeyPem(pki_.server));
  const std::string bundle = dir_.Write("rot/ca.pem", TestPki::Pem(pki_.root));
  const std::string service_cert = dir_.Write("rot/greeter.crt", TestPki::Pem(pki_.client));
  const std::string service_key = dir_.Write("rot/greeter.key", TestPki::KeyPem(pki_.client));
  auto provider = [&](const std::string& cert, const std::string& key, TlsRole role) {
    CertificateProvider::Options options;
    options.tls.role = role;
    options.tls.expected_server_name = role == TlsRole::kClient ? "localhost" : "";
    options.certificate.certificate_path = cert;
    options.certificate.key_path = key;
    options.usage =
        role == TlsRole::kServer ? CertificateUsage::kServer : CertificateUsage::kClient;
    options.trust = runtime::tls::TrustSource{};
    options.trust->ca_path = bundle;
    options.use_inotify = false;  // rotations are applied with ReloadNow(), one at a time
    options.poll_interval = absl::ZeroDuration();
    return CertificateProvider::Start(std::move(options));
  };
  auto gateway_tls = provider(gateway_cert, gateway_key, TlsRole::kServer);
  auto service_tls = provider(service_cert, service_key, TlsRole::kClient);
  ASSERT_THAT(gateway_tls, IsOk());
  ASSERT_THAT(service_tls, IsOk());
  CertificateProvider* gateway_provider = gateway_tls->get();
  CertificateProvider* service_provider = service_tls->get();

  gateway_.reset();
  gateway::GatewayConfig config;
  config.gateway_id = "gw-rotation";
  config.services.listen_address = "127.0.0.1";
  config.services.port = 0;
  config.callers = config.services;
  gateway::GatewayOptions gateway_options;
  gateway_options.config = std::move(config);
  gateway_options.service_tls = [gateway_provider] { return gateway_provider->Current(); };
  gateway_options.caller_tls = [gateway_provider] { return gateway_provider->Current(); };
  auto started = gateway::Gateway::Start(loop_.io(), std::move(gateway_options));
  ASSERT_THAT(started, IsOk());
  gateway_ = *std::move(started);

  auto service_tls_now = [service_provider] { return service_provider->Current(); };
  std::vector<std::shared_ptr<ServiceHost>> hosts = {
      StartService(service_tls_now, "greeter", absl::Milliseconds(200))};
  ASSERT_TRUE(loop_.PumpUntil([&] { return hosts.front()->registered_gateways() == 1; }));
  auto channel = Connect();
  ASSERT_NE(channel, nullptr);

  constexpr int kConcurrent = 64;
  constexpr int kRotations = 20;
  bool stop = false;
  int succeeded = 0;
  int running = kConcurrent;
  std::vector<absl::Status> failures;
  for (int i = 0; i < kConcurrent; ++i) {
    asio::co_spawn(loop_.io(), EchoUntilStopped(channel, &stop, &succeeded, &failures, &running),
                   runtime::LogCoroutineFailure("echo load"));
  }
  auto settle = [&] { loop_.PumpUntil([] { return false; }, std::chrono::milliseconds(20)); };
  // Each reload must succeed and swap a new snapshot in.
  std::uint64_t gateway_generation = 0;
  std::uint64_t service_generation = 0;
  auto reload = [](CertificateProvider* provider, std::uint64_t* generation,
                   const std::string& what) {
    const runtime::tls::ReloadEvent event = provider->ReloadNow();
    EXPECT_THAT(event.status, IsOk()) << what;
    EXPECT_GT(event.generation, *generation) << what << ": nothing new was swapped in";
    *generation = event.generation;
  };
  for (int round = 0; round < kRotations; ++round) {
    const std::string tag = std::to_string(round);
    // The gateway's certificate: a new key and certificate for the same names.
    testing::CertSpec server = testing::LeafSpec("gateway.internal", true, false);
    server.dns_names = {"gateway.internal", "localhost"};
    server.ips = {"127.0.0.1"};
    const testing::MintedCert new_server = testing::MustMint(server, &pki_.root);
    dir_.Write("rot/gateway.crt", TestPki::Pem(new_server));
    dir_.Write("rot/gateway.key", TestPki::KeyPem(new_server));
    reload(gateway_provider, &gateway_generation, "gateway certificate " + tag);
    settle();
    // The CA bundle: the root plus a CA minted for this round.
    const testing::MintedCert extra = testing::MustMint(
        [&] {
          testing::CertSpec ca = testing::LeafSpec("Rotation CA " + tag, false, false);
          ca.is_ca = true;
          return ca;
        }(),
        nullptr);
    dir_.Write("rot/ca.pem", TestPki::Pem(pki_.root) + TestPki::Pem(extra));
    reload(gateway_provider, &gateway_generation, "gateway CA bundle " + tag);
    reload(service_provider, &service_generation, "service CA bundle " + tag);
    settle();
    // The service's certificate.
    testing::CertSpec greeter = testing::LeafSpec("greeter", false, true);
    greeter.dns_names = {"greeter"};
    const testing::MintedCert new_greeter = testing::MustMint(greeter, &pki_.root);
    dir_.Write("rot/greeter.crt", TestPki::Pem(new_greeter));
    dir_.Write("rot/greeter.key", TestPki::KeyPem(new_greeter));
    reload(service_provider, &service_generation, "service certificate " + tag);
    settle();
    // New handshakes against what was just rotated in: a caller and a service instance.
    auto fresh = Connect();
    ASSERT_NE(fresh, nullptr) << "round " << tag;
    EXPECT_THAT(loop_.Run(fresh->Call("test.v1.Texts/Echo", "fresh")), IsOk()) << "round " << tag;
    fresh->Close();
    hosts.push_back(StartService(service_tls_now, "greeter", absl::Milliseconds(200)));
    ASSERT_TRUE(loop_.PumpUntil([&] { return hosts.back()->registered_gateways() == 1; }))
        << "round " << tag;
  }
  stop = true;
  ASSERT_TRUE(loop_.PumpUntil([&] { return running == 0; }));
  EXPECT_THAT(failures, ::testing::IsEmpty());
  EXPECT_GT(succeeded, kConcurrent * kRotations);
  EXPECT_EQ(gateway_->routes().Snapshot()->instances.size(), hosts.size());
  std::printf(
      "rotation under load: %d rotations each of the gateway certificate, the CA bundle "
      "and a service certificate; %d calls succeeded, %zu failed\n",
      kRotations, succeeded, failures.size());
  for (auto& host : hosts) {
    host->Shutdown();
  }
  channel->Close();
}

// CPU seconds `pid` has used (user + system), from /proc/<pid>/stat; -1 if unreadable.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t after_name = stat.rfind(')');
  if (after_name == std::string::npos) {
    return -1;
  }
  std::istringstream fields(stat.substr(after_name + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) {  // utime, stime
      ticks += std::stod(field);
    }
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The gateway as a process (stella-gateway) killed with SIGKILL under load, then started again on
// the same ports. Callers keep calling (pausing 20 ms after a failure, as a client would): while
// the gateway is gone calls fail UNAVAILABLE at once (none hangs), neither the service process
// nor the caller spins, and both come back by themselves.
TEST_F(SdkTest, GatewayProcessKilledUnderLoadNobodySpinsAndCallsRecover) {
  gateway_.reset();  // this test's gateway is a process
  const std::string cert = dir_.Write("down/greeter.crt", TestPki::Pem(pki_.client));
  const std::string key = dir_.Write("down/greeter.key", TestPki::KeyPem(pki_.client));
  const std::string gateway_cert = dir_.Write("down/gateway.crt", TestPki::Pem(pki_.server));
  const std::string gateway_key = dir_.Write("down/gateway.key", TestPki::KeyPem(pki_.server));
  const std::string ca = dir_.Write("down/ca.crt", TestPki::Pem(pki_.root));
  const std::uint16_t service_port = testing::FreeLoopbackPort();
  const std::uint16_t caller_port = testing::FreeLoopbackPort();
  const std::string listener = absl::StrCat(
      "  ListenAddress: 127.0.0.1\n  CertificatePath: ", gateway_cert,
      "\n  CertificateKeyPath: ", gateway_key, "\n  ClientCaCertificatePath: ", ca, "\n");
  const std::string gateway_config =
      dir_.Write("down/gateway.yaml",
                 absl::StrCat("GatewayId: gw-process\nTlsTransport:\n  Port: ", service_port, "\n",
                              listener, "Callers:\n  Port: ", caller_port, "\n", listener));
  const std::vector<std::string> gateway_command = {
      std::string(STELLA_BINARY_DIR) + "/stella-gateway", "--config=" + gateway_config};
  auto gateway = std::make_unique<ChildProcess>(gateway_command);
  ASSERT_TRUE(gateway->started());
  const std::string config = dir_.Write(
      "down/service.yaml",
      absl::StrCat("TlsClient:\n  Gateways: [\"127.0.0.1:", service_port,
                   "\"]\n  ClientCertificatePath: ", cert, "\n  ClientCertificateKeyPath: ", key,
                   "\n  ServerCaCertificatePath: ", ca,
                   "\n  ExpectedServerName: localhost\n"
                   "  InitialReconnectDelayMs: 50\n  MaxReconnectDelayMs: 500\n"));
  ServiceProcess service(config, "steady");
  ASSERT_TRUE(service.started());

  ChannelOptions options;
  options.gateways = {{"127.0.0.1", caller_port}};
  options.initial_reconnect_delay = absl::Milliseconds(20);
  options.max_reconnect_delay = absl::Milliseconds(500);
  auto tls = Tls(frontend_, TlsRole::kClient);
  options.tls = [tls] { return tls; };
  std::shared_ptr<Channel> channel;
  ASSERT_TRUE(loop_.PumpUntil(
      [&] {
        auto connected = loop_.Run(Channel::Connect(loop_.executor(), options));
        if (connected.ok()) {
          channel = *connected;
        }
        return channel != nullptr;
      },
      std::chrono::seconds(20)));
  CallOptions ready;
  ready.wait_for_ready = true;
  ready.timeout = absl::Seconds(1);
  ASSERT_TRUE(loop_.PumpUntil(
      [&] { return loop_.Run(channel->Call("test.v1.Texts/Echo", "up?", ready)).ok(); },
      std::chrono::seconds(20)));  // the service has registered

  constexpr int kWorkers = 16;
  bool stop = false;
  int running = kWorkers;
  int succeeded = 0;
  std::vector<absl::Status> failures;
  auto worker = [](std::shared_ptr<Channel> channel, const bool* stop, int* succeeded,
                   std::vector<absl::Status>* failures, int* running) -> asio::awaitable<void> {
    asio::steady_timer pause(co_await asio::this_coro::executor);
    while (!*stop) {
      absl::StatusOr<std::string> answer = co_await channel->Call("test.v1.Texts/Echo", "x");
      if (answer.ok()) {
        ++*succeeded;
        continue;
      }
      failures->push_back(answer.status());
      pause.expires_after(std::chrono::milliseconds(20));
      co_await pause.async_wait(asio::use_awaitable);
    }
    --*running;
  };
  for (int i = 0; i < kWorkers; ++i) {
    asio::co_spawn(loop_.io(), worker(channel, &stop, &succeeded, &failures, &running),
                   runtime::LogCoroutineFailure("caller"));
  }
  ASSERT_TRUE(loop_.PumpUntil([&] { return succeeded > 1000; }));

  gateway->Kill();  // SIGKILL: no GOAWAY, no close_notify; the kernel closes its sockets
  const double service_cpu_before = CpuSeconds(service.pid());
  const double caller_cpu_before = CpuSeconds(getpid());
  const absl::Time down_since = absl::Now();
  loop_.PumpUntil([] { return false; }, std::chrono::seconds(1));
  const double down_seconds = absl::ToDoubleSeconds(absl::Now() - down_since);
  const double service_cpu = CpuSeconds(service.pid()) - service_cpu_before;
  const double caller_cpu = CpuSeconds(getpid()) - caller_cpu_before;
  const std::size_t failed_while_down = failures.size();

  gateway = std::make_unique<ChildProcess>(gateway_command);  // the same ports
  ASSERT_TRUE(gateway->started());
  const absl::Time restarted = absl::Now();
  const int succeeded_before = succeeded;
  ASSERT_TRUE(loop_.PumpUntil([&] { return succeeded > succeeded_before + 1000; },
                              std::chrono::seconds(30)));
  const absl::Duration recovery = absl::Now() - restarted;
  stop = true;
  ASSERT_TRUE(loop_.PumpUntil([&] { return running == 0; }));

  EXPECT_GT(failed_while_down, 0u);
  for (std::size_t i = 0; i < failures.size(); ++i) {
    if (i < failed_while_down) {
      EXPECT_THAT(failures[i], StatusIs(absl::StatusCode::kUnavailable));
    } else {
      // Back up but not yet told about the service by its re-registration, the new gateway
      // knows no such method.
      EXPECT_THAT(failures[i], ::testing::AnyOf(StatusIs(absl::StatusCode::kUnavailable),
                                                StatusIs(absl::StatusCode::kNotFound)));
    }
  }
  // A process that spun while the gateway was away would burn about a second of CPU here. The
  // caller's 16 workers each retry every 20 ms, failing fast: a little CPU, not a core.
  EXPECT_LT(service_cpu, 0.25 * down_seconds)
      << "the service used " << service_cpu << " s of CPU in " << down_seconds << " s";
  EXPECT_LT(caller_cpu, 0.5 * down_seconds)
      << "the caller used " << caller_cpu << " s of CPU in " << down_seconds << " s";
  std::printf(
      "gateway process killed for %.2f s under %d callers: %zu calls failed UNAVAILABLE; CPU "
      "meanwhile: service %.3f s, caller %.3f s; 1,000 calls succeeded again %s after the "
      "restart\n",
      down_seconds, kWorkers, failed_while_down, service_cpu, caller_cpu,
      absl::FormatDuration(recovery).c_str());
  channel->Close();
}

}  // namespace
}  // namespace stella::sdk
