#include "gateway/gateway.h"

#include <fcntl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gateway/sessions.h"
#include "runtime/async.h"
#include "runtime/framed_connection.h"
#include "spdlog/spdlog.h"
#include "stella/router/v1/frames.pb.h"

namespace stella::gateway {
namespace {

namespace asio = boost::asio;
namespace v1 = ::stella::router::v1;
using tcp = asio::ip::tcp;

}  // namespace

// The listeners around the sessions' hub.
struct Gateway::State {
  State(asio::io_context& io, GatewayOptions options)
      : hub(io, std::move(options)), service_acceptor(io), caller_acceptor(io) {}

  runtime::ConnectionOptions ConnectionOptionsFor(const runtime::tls::TlsServerConfig& tls) const {
    runtime::ConnectionOptions connection;
    connection.handshake_timeout = tls.tls.handshake_timeout;
    connection.max_payload_size = tls.max_payload_size;
    connection.max_queued_bytes = hub.options.config.limits.max_queued_bytes_per_connection;
    return connection;
  }

  SessionHub hub;
  tcp::acceptor service_acceptor;
  tcp::acceptor caller_acceptor;
};

namespace {

using State = Gateway::State;
using runtime::FramedConnection;
using Starter = void (*)(SessionHub&, std::shared_ptr<runtime::FrameLink>, absl::Duration,
                         absl::Duration);

// Runs the TLS handshake of an accepted connection and starts its session.
asio::awaitable<void> Welcome(std::shared_ptr<State> state,
                              std::shared_ptr<FramedConnection> connection,
                              runtime::tls::TlsServerConfig tls, Starter start_session) {
  absl::Status handshake = co_await connection->Handshake();
  if (!handshake.ok()) {
    spdlog::warn("TLS handshake with {} failed [{}]: {}", connection->remote_address(),
                 runtime::FailureLabelOf(handshake), std::string(handshake.message()));
    state->hub.metrics().HandshakeFailed(runtime::FailureLabelOf(handshake));
    co_return;
  }
  if (state->hub.stopping) {
    connection->Close(absl::UnavailableError("the gateway is shutting down"));
    co_return;
  }
  start_session(state->hub, std::move(connection), tls.tls.handshake_timeout,
                tls.heartbeat_interval);
}

asio::awaitable<void> AcceptLoop(std::shared_ptr<State> state, tcp::acceptor* acceptor,
                                 TlsSource tls_source, runtime::tls::TlsServerConfig tls,
                                 Starter start_session) {
  const runtime::ConnectionOptions options = state->ConnectionOptionsFor(tls);
  while (!state->hub.stopping) {
    boost::system::error_code ec;
    tcp::socket socket =
        co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (state->hub.stopping || ec == asio::error::operation_aborted) {
        co_return;
      }
      spdlog::error("accept on port {} failed: {}", tls.port, ec.message());
      continue;  // e.g. out of file descriptors: keep serving the connections we have
    }
    auto connection = FramedConnection::FromAccepted(std::move(socket), tls_source(), options);
    asio::co_spawn(state->hub.io, Welcome(state, std::move(connection), tls, start_session),
                   runtime::LogCoroutineFailure("connection handshake"));
  }
}

absl::Status Listen(tcp::acceptor& acceptor, const runtime::tls::TlsServerConfig& tls,
                    const char* what) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(tls.listen_address, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ListenAddress \"", tls.listen_address, "\" is not an IP address"));
  }
  const tcp::endpoint endpoint(address, tls.port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    // Not inherited by a process this one starts: a child holding the listener would keep the
    // port bound after this process is gone.
    ::fcntl(acceptor.native_handle(), F_SETFD, FD_CLOEXEC);
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  }
  if (!ec) {
    acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    acceptor.listen(tls.backlog, ec);
  }
  if (ec) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen for ", what, " on ", tls.listen_address, ":", tls.port, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Start(asio::io_context& io,
                                                        GatewayOptions options) {
  if (!options.service_tls) {
    return absl::InvalidArgumentError("no TLS source for the service listener");
  }
  if (options.config.callers.has_value() && !options.caller_tls) {
    return absl::InvalidArgumentError("no TLS source for the caller listener");
  }
  auto state = std::make_shared<State>(io, std::move(options));
  const GatewayOptions& opts = state->hub.options;
  const GatewayConfig& config = opts.config;
  if (absl::Status status = Listen(state->service_acceptor, config.services, "services");
      !status.ok()) {
    return status;
  }
  asio::co_spawn(io,
                 AcceptLoop(state, &state->service_acceptor, opts.service_tls, config.services,
                            &StartServiceSession),
                 runtime::LogCoroutineFailure("service listener"));
  if (config.callers.has_value()) {
    if (absl::Status status = Listen(state->caller_acceptor, *config.callers, "callers");
        !status.ok()) {
      return status;
    }
    asio::co_spawn(io,
                   AcceptLoop(state, &state->caller_acceptor, opts.caller_tls, *config.callers,
                              &StartCallerSession),
                   runtime::LogCoroutineFailure("caller listener"));
  }
  spdlog::info("gateway {} listening for services on port {}{}", config.gateway_id,
               state->service_acceptor.local_endpoint().port(),
               config.callers ? absl::StrCat(" and for callers on port ",
                                             state->caller_acceptor.local_endpoint().port())
                              : std::string());
  return std::unique_ptr<Gateway>(new Gateway(std::move(state)));
}

namespace {

// Checks every 20 ms whether the calls in flight are done or the drain deadline has passed.
void WatchDrain(const std::shared_ptr<State>& state,
                const std::shared_ptr<asio::steady_timer>& timer, absl::Time deadline,
                const std::function<void()>& done) {
  const std::size_t in_flight = CallsInFlight(state->hub);
  if (in_flight == 0 || absl::Now() >= deadline) {
    if (in_flight > 0) {
      spdlog::warn("drain deadline passed with {} call(s) still in flight; closing", in_flight);
    }
    CloseAll(state->hub, absl::UnavailableError("the gateway shut down"));
    done();
    return;
  }
  timer->expires_after(std::chrono::milliseconds(20));
  timer->async_wait([state, timer, deadline, done](boost::system::error_code ec) {
    if (!ec) {
      WatchDrain(state, timer, deadline, done);
    }
  });
}

}  // namespace

Gateway::~Gateway() {
  state_->hub.stopping = true;
  boost::system::error_code ignored;
  state_->service_acceptor.close(ignored);
  state_->caller_acceptor.close(ignored);
  CloseAll(state_->hub, absl::UnavailableError("the gateway is shutting down"));
}

void Gateway::Drain(absl::Duration timeout, const std::function<void()>& done) {
  state_->hub.stopping = true;
  boost::system::error_code ignored;
  state_->service_acceptor.close(ignored);
  state_->caller_acceptor.close(ignored);
  v1::Goaway goaway;
  goaway.set_code(0);
  goaway.set_reason("the gateway is shutting down");
  goaway.set_drain_timeout_ms(static_cast<std::uint32_t>(absl::ToInt64Milliseconds(timeout)));
  SendToAll(state_->hub, runtime::FrameType::kGoaway, goaway);
  spdlog::info("draining: {} caller and {} service connection(s), deadline {}",
               state_->hub.callers.size(), state_->hub.services.size(),
               absl::FormatDuration(timeout));
  WatchDrain(state_, std::make_shared<asio::steady_timer>(state_->hub.io), absl::Now() + timeout,
             done);
}

std::uint16_t Gateway::service_port() const {
  boost::system::error_code ec;
  return state_->service_acceptor.local_endpoint(ec).port();
}

std::uint16_t Gateway::caller_port() const {
  boost::system::error_code ec;
  if (!state_->caller_acceptor.is_open()) {
    return 0;
  }
  return state_->caller_acceptor.local_endpoint(ec).port();
}

const RoutingTable& Gateway::routes() const { return state_->hub.routes; }

GatewayMetrics& Gateway::metrics() const { return state_->hub.metrics(); }

std::size_t Gateway::service_connections() const { return state_->hub.services.size(); }

std::size_t Gateway::caller_connections() const { return state_->hub.callers.size(); }

}  // namespace stella::gateway
