// The gateway's routing table: method "package.Service/Method" → the live instances serving it.
//
// The table is an immutable snapshot replaced on every change (a registration or a closed
// connection) under a writer lock; readers hold a RoutingReader per thread, which re-reads the
// snapshot only when its version changed, so a lookup takes no lock.
#ifndef STELLA_GATEWAY_ROUTING_TABLE_H_
#define STELLA_GATEWAY_ROUTING_TABLE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tls/x509.h"
#include "stella/router/v1/frames.pb.h"

namespace stella::gateway {

class ServiceSession;  // the gateway's side of one service connection

// One registered service connection. Shared by the snapshots that list it; its counters and flags
// change in place.
struct Instance {
  std::uint64_t connection_id = 0;  // unique per connection in this gateway process
  std::string service_name;
  std::string instance_id;
  std::string region;
  std::string version;
  runtime::tls::CertificateIdentity identity;
  std::vector<router::v1::Endpoint> endpoints;
  // The serialized google.protobuf.FileDescriptorSet from HELLO (may be empty), kept as bytes.
  std::string file_descriptor_set;
  // Where calls go. Expired once the connection is gone.
  std::weak_ptr<ServiceSession> session;

  // Calls routed to it and not yet finished (power-of-two-choices input).
  std::atomic<std::int64_t> outstanding{0};
  // Draining (it sent or was sent GOAWAY) or unhealthy (missed heartbeats): not chosen.
  std::atomic<bool> draining{false};
  std::atomic<bool> healthy{true};
};

// The instances serving one method.
struct MethodRoute {
  router::v1::Endpoint endpoint;  // as the first registering instance described it
  std::vector<std::shared_ptr<Instance>> instances;
};

// An immutable view of the table.
struct RoutingSnapshot {
  std::uint64_t version = 0;
  absl::flat_hash_map<std::string, MethodRoute> methods;
  std::vector<std::shared_ptr<Instance>> instances;  // in registration order
};

class RoutingTable {
 public:
  RoutingTable();

  // Adds `instance` with its endpoints. INVALID_ARGUMENT if an endpoint's method name is not
  // "package.Service/Method", or if a method is already registered with other request/response
  // types or kind (two versions of a schema must not share a method name); PERMISSION_DENIED if
  // a method is being served under another service name; ALREADY_EXISTS if its connection id is
  // registered.
  absl::Status Add(std::shared_ptr<Instance> instance);

  // Removes the instance of `connection_id`. Returns true the one time it was present, so that
  // a connection's cleanup can tell (and tests can check) that it is removed exactly once.
  bool Remove(std::uint64_t connection_id);

  // The current snapshot (takes the writer lock briefly; per-thread readers should use
  // RoutingReader instead).
  std::shared_ptr<const RoutingSnapshot> Snapshot() const;

  std::uint64_t version() const { return version_.load(std::memory_order_acquire); }

 private:
  friend class RoutingReader;
  void Publish(std::shared_ptr<RoutingSnapshot> next);  // under mutex_

  mutable std::mutex mutex_;
  std::shared_ptr<const RoutingSnapshot> current_;  // guarded by mutex_
  std::atomic<std::uint64_t> version_{0};
};

// A per-thread reader of a RoutingTable: holds the last snapshot it saw and re-reads it only when
// the table's version moved on. Not thread-safe itself; one per io thread.
class RoutingReader {
 public:
  explicit RoutingReader(const RoutingTable& table) : table_(table) {}

  const RoutingSnapshot& Get();

  // Chooses an instance for `method`: among those neither draining nor unhealthy, the ones in
  // `caller_region` if there are any (and `caller_region` is set), then the one with fewer
  // outstanding calls of two picked at random. NOT_FOUND naming the method when no service
  // registers it; UNAVAILABLE when it is registered but no instance is live.
  absl::StatusOr<std::shared_ptr<Instance>> Pick(absl::string_view method,
                                                 absl::string_view caller_region);

 private:
  const RoutingTable& table_;
  std::uint64_t seen_ = ~std::uint64_t{0};
  std::shared_ptr<const RoutingSnapshot> snapshot_;
  std::minstd_rand rng_{std::random_device{}()};
  // Candidates of the current pick, reused across picks; point into snapshot_.
  std::vector<const std::shared_ptr<Instance>*> scratch_;
};

}  // namespace stella::gateway

#endif  // STELLA_GATEWAY_ROUTING_TABLE_H_
