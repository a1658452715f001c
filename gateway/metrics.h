// The gateway's Prometheus metrics, kept with prometheus-cpp's core library only (its pull and
// push parts bring civetweb and OpenSSL 3; the admin server serves the text itself).
#ifndef STELLA_GATEWAY_METRICS_H_
#define STELLA_GATEWAY_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace stella::gateway {

// Thread-safe. Metric names:
//   stella_gateway_connections{role}                      gauge, open connections after HELLO
//   stella_gateway_requests_total{method,code}            counter, finished calls
//   stella_gateway_request_duration_seconds{method}       histogram, caller-observed latency
//   stella_gateway_handshake_failures_total{reason}       counter, by failure label
//   stella_gateway_certificate_reloads_total{listener,result}  counter
//   stella_gateway_certificate_expiry_seconds{listener}   gauge, seconds until notAfter
class GatewayMetrics {
 public:
  GatewayMetrics();
  ~GatewayMetrics();

  void ConnectionOpened(const std::string& role);
  void ConnectionClosed(const std::string& role);
  void HandshakeFailed(const std::string& reason);
  void CallFinished(const std::string& method, absl::StatusCode code, absl::Duration latency);
  void CertificateReloaded(const std::string& listener, bool ok);
  void SetCertificateExpiry(const std::string& listener, absl::Time not_after);

  // The Prometheus text exposition format (version 0.0.4).
  std::string Serialize() const;

 private:
  struct Families;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Families> families_;
};

}  // namespace stella::gateway

#endif  // STELLA_GATEWAY_METRICS_H_
