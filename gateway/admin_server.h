// The admin HTTP listener (section `Admin:`, 127.0.0.1:9503 by default), on Boost.Beast:
//   GET /healthz  200 "ok" while the process runs
//   GET /readyz   200 "ready" when the listeners are up and certificates loaded, else 503 + why
//   GET /metrics  Prometheus text format
//   GET /routes   the routing table as JSON
//   GET /schema/<service>  the FileDescriptorSet (binary protobuf) an instance of it registered
// Anything else is 404 (or 405 for a method other than GET). Plain HTTP: keep it on loopback or
// behind a trusted network.
#ifndef STELLA_GATEWAY_ADMIN_SERVER_H_
#define STELLA_GATEWAY_ADMIN_SERVER_H_

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "gateway/gateway_config.h"
#include "gateway/routing_table.h"

namespace stella::gateway {

// Renders a routing snapshot as the /routes JSON document.
std::string RoutesJson(const RoutingSnapshot& snapshot);

// The serialized FileDescriptorSet the first instance of `service` that sent one registered.
std::optional<std::string> SchemaOf(const RoutingSnapshot& snapshot, const std::string& service);

struct AdminSources {
  // OK when ready; otherwise why not (the 503 body).
  std::function<absl::Status()> ready;
  std::function<std::string()> metrics;
  std::function<std::string()> routes;
  // The schema of a service, or std::nullopt (404).
  std::function<std::optional<std::string>(const std::string& service)> schema;
};

class AdminServer {
 public:
  // Listens on config's address and port (0 picks a free one). UNAVAILABLE naming the address
  // when it cannot bind.
  static absl::StatusOr<std::unique_ptr<AdminServer>> Start(boost::asio::io_context& io,
                                                            const AdminConfig& config,
                                                            AdminSources sources);
  // Stops listening; requests in progress finish on the io_context.
  ~AdminServer();

  std::uint16_t port() const;

  struct State;

 private:
  explicit AdminServer(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace stella::gateway

#endif  // STELLA_GATEWAY_ADMIN_SERVER_H_
