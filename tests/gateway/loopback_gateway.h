// The gateway the gateway suites run: one place for its test configuration.
#ifndef STELLA_TESTS_GATEWAY_LOOPBACK_GATEWAY_H_
#define STELLA_TESTS_GATEWAY_LOOPBACK_GATEWAY_H_

#include <functional>
#include <memory>
#include <string>

#include "gateway/gateway.h"

namespace stella::gateway {

// Starts a gateway on `io` named `gateway_id`: both listeners on 127.0.0.1 with ports the system
// picks, a 5 s handshake timeout and 10 s heartbeats, then whatever `adjust` changes; `tls` serves
// both listeners.
inline absl::StatusOr<std::unique_ptr<Gateway>> StartLoopbackGateway(
    boost::asio::io_context& io, const std::string& gateway_id,
    const std::shared_ptr<const runtime::tls::TlsContext>& tls,
    const std::function<void(GatewayConfig&)>& adjust = nullptr) {
  GatewayConfig config;
  config.gateway_id = gateway_id;
  config.services.listen_address = "127.0.0.1";
  config.services.port = 0;
  config.services.tls.handshake_timeout = absl::Seconds(5);
  config.services.heartbeat_interval = absl::Seconds(10);
  config.callers = config.services;
  if (adjust) {
    adjust(config);
  }
  GatewayOptions options;
  options.config = std::move(config);
  options.service_tls = [tls] { return tls; };
  options.caller_tls = [tls] { return tls; };
  return Gateway::Start(io, std::move(options));
}

}  // namespace stella::gateway

#endif  // STELLA_TESTS_GATEWAY_LOOPBACK_GATEWAY_H_
