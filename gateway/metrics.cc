#include "gateway/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <sstream>

#include "absl/status/status.h"

namespace stella::gateway {

struct GatewayMetrics::Families {
  prometheus::Family<prometheus::Gauge>* connections;
  prometheus::Family<prometheus::Counter>* requests;
  prometheus::Family<prometheus::Histogram>* latency;
  prometheus::Family<prometheus::Counter>* handshake_failures;
  prometheus::Family<prometheus::Counter>* reloads;
  prometheus::Family<prometheus::Gauge>* expiry;
};

GatewayMetrics::GatewayMetrics()
    : registry_(std::make_shared<prometheus::Registry>()), families_(std::make_unique<Families>()) {
  families_->connections = &prometheus::BuildGauge()
                                .Name("stella_gateway_connections")
                                .Help("Open connections that completed HELLO, by role")
                                .Register(*registry_);
  families_->requests = &prometheus::BuildCounter()
                             .Name("stella_gateway_requests_total")
                             .Help("Finished calls by method and status code")
                             .Register(*registry_);
  families_->latency = &prometheus::BuildHistogram()
                            .Name("stella_gateway_request_duration_seconds")
                            .Help("Call duration as the gateway saw it, by method")
                            .Register(*registry_);
  families_->handshake_failures = &prometheus::BuildCounter()
                                       .Name("stella_gateway_handshake_failures_total")
                                       .Help("Failed TLS handshakes by reason")
                                       .Register(*registry_);
  families_->reloads = &prometheus::BuildCounter()
                            .Name("stella_gateway_certificate_reloads_total")
                            .Help("Certificate reload attempts by listener and result")
                            .Register(*registry_);
  families_->expiry = &prometheus::BuildGauge()
                           .Name("stella_gateway_certificate_expiry_seconds")
                           .Help("Seconds until the serving certificate's notAfter")
                           .Register(*registry_);
}

GatewayMetrics::~GatewayMetrics() = default;

void GatewayMetrics::ConnectionOpened(const std::string& role) {
  families_->connections->Add({{"role", role}}).Increment();
}

void GatewayMetrics::ConnectionClosed(const std::string& role) {
  families_->connections->Add({{"role", role}}).Decrement();
}

void GatewayMetrics::HandshakeFailed(const std::string& reason) {
  families_->handshake_failures->Add({{"reason", reason}}).Increment();
}

void GatewayMetrics::CallFinished(const std::string& method, absl::StatusCode code,
                                  absl::Duration latency) {
  families_->requests->Add({{"method", method}, {"code", absl::StatusCodeToString(code)}})
      .Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  families_->latency->Add({{"method", method}}, kBuckets).Observe(absl::ToDoubleSeconds(latency));
}

void GatewayMetrics::CertificateReloaded(const std::string& listener, bool ok) {
  families_->reloads->Add({{"listener", listener}, {"result", ok ? "ok" : "rejected"}}).Increment();
}

void GatewayMetrics::SetCertificateExpiry(const std::string& listener, absl::Time not_after) {
  families_->expiry->Add({{"listener", listener}})
      .Set(absl::ToDoubleSeconds(not_after - absl::Now()));
}

std::string GatewayMetrics::Serialize() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace stella::gateway
