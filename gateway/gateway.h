// The gateway server: a service listener and a caller listener over mutual TLS, the HELLO
// exchange with identity binding, and the routing of call streams from callers to the services
// registered for their methods (docs/protocol.md is the contract; docs/gateway.md the behaviour).
//
// Threading: the gateway runs on one io_context; run it on one thread. (Spreading connections
// over one io_context per core is the performance issue's work.)
#ifndef STELLA_GATEWAY_GATEWAY_H_
#define STELLA_GATEWAY_GATEWAY_H_

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/gateway_config.h"
#include "gateway/metrics.h"
#include "gateway/routing_table.h"
#include "runtime/tls/tls_context.h"

namespace stella::gateway {

// Where each listener takes the TLS snapshot for a new handshake from (a CertificateProvider's
// Current() in production, a fixed snapshot in tests).
using TlsSource = std::function<std::shared_ptr<const runtime::tls::TlsContext>()>;

struct GatewayOptions {
  GatewayConfig config;
  TlsSource service_tls;
  // Required when config.callers is set.
  TlsSource caller_tls;
  // Where the gateway counts what it does; one is made when null.
  std::shared_ptr<GatewayMetrics> metrics;
};

class Gateway {
 public:
  // Binds the listeners (a configured port of 0 picks a free one) and starts accepting on `io`.
  // UNAVAILABLE naming the address when a listener cannot be bound; INVALID_ARGUMENT when a
  // TLS source is missing.
  static absl::StatusOr<std::unique_ptr<Gateway>> Start(boost::asio::io_context& io,
                                                        GatewayOptions options);

  // Stops accepting and closes every connection (their calls fail with UNAVAILABLE). The
  // connections finish closing on the io_context after this returns.
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  std::uint16_t service_port() const;
  // 0 when there is no caller listener.
  std::uint16_t caller_port() const;

  // The routing table (for /routes and tests).
  const RoutingTable& routes() const;

  GatewayMetrics& metrics() const;

  // Graceful shutdown: stops accepting, tells every peer GOAWAY with `timeout` as the drain
  // deadline, refuses new calls with UNAVAILABLE, lets calls in flight finish until `timeout`,
  // then closes every connection and calls `done` (on the io_context).
  void Drain(absl::Duration timeout, const std::function<void()>& done);

  // Number of open connections by role, after their handshake (for metrics and tests).
  std::size_t service_connections() const;
  std::size_t caller_connections() const;

  struct State;  // the listeners and the sessions' hub, kept alive by pending accepts

 private:
  explicit Gateway(std::shared_ptr<State> state) : state_(std::move(state)) {}

  std::shared_ptr<State> state_;
};

}  // namespace stella::gateway

#endif  // STELLA_GATEWAY_GATEWAY_H_
