// ServiceHost: the service side of Stella Router. It dials out to one or more gateways (no
// inbound port), registers the service's endpoints with HELLO, runs a handler coroutine per call,
// answers heartbeats, and reconnects with exponential backoff and full jitter.
#ifndef STELLA_SERVICE_SDK_SERVICE_HOST_H_
#define STELLA_SERVICE_SDK_SERVICE_HOST_H_

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/framed_connection.h"
#include "service_sdk/call.h"
#include "service_sdk/gateway_address.h"
#include "stella/router/v1/frames.pb.h"

namespace stella::sdk {

// One incoming call, seen from its handler. Lives on the host's executor.
class ServerCall {
 public:
  ServerCall(CallContext context, const boost::asio::any_io_executor& executor,
             std::uint32_t window)
      : context_(std::move(context)), requests_(executor), window_(executor, window) {}

  CallContext& context() { return context_; }
  // The next request message; std::nullopt at the end of the request stream; CANCELLED (or the
  // reason) if the call was cancelled.
  boost::asio::awaitable<absl::StatusOr<std::optional<std::string>>> Read() {
    co_return co_await requests_.Read();
  }
  // Streams a response message (server and bidirectional streaming), waiting while the stream's
  // flow-control window is full because the caller reads slowly. The call's status if it ended.
  boost::asio::awaitable<absl::Status> Write(std::string message);
  // Sets the single response message of a unary or client-streaming call; it travels in the
  // final frame with the status.
  void SetResponse(std::string message) { response_ = std::move(message); }

 private:
  friend struct HostAccess;  // the host's side of a call (service_host.cc)
  CallContext context_;
  Inbox requests_;
  SendWindow window_;
  std::optional<std::string> response_;
  // Set by the host: how to send a RESPONSE frame for this call.
  std::function<absl::Status(const router::v1::Response&, bool final)> send_;
};

// A handler runs once per call and returns the call's status. It must be a plain function, a
// member function or a lambda without captures (a capturing lambda coroutine's captures die
// before the coroutine ends). An exception it throws becomes INTERNAL with its message.
using Handler = std::function<boost::asio::awaitable<absl::Status>(ServerCall&)>;

struct ServiceHostOptions {
  std::string service_name;
  // Unique per process; a random one when empty.
  std::string instance_id;
  std::string region;
  std::string version;
  // Every gateway replica to register with; the host keeps a connection to each.
  std::vector<GatewayAddress> gateways;
  // Where each connection attempt takes the TLS snapshot from (a CertificateProvider's Current()).
  std::function<std::shared_ptr<const runtime::tls::TlsContext>()> tls;
  runtime::ConnectionOptions connection;
  absl::Duration initial_reconnect_delay = absl::Seconds(1);
  absl::Duration max_reconnect_delay = absl::Seconds(30);
};

class ServiceHost : public std::enable_shared_from_this<ServiceHost> {
 public:
  static std::shared_ptr<ServiceHost> Create(boost::asio::any_io_executor executor,
                                             ServiceHostOptions options);
  ~ServiceHost();

  // Registers a method before Start. INVALID_ARGUMENT for a method name that is not
  // "package.Service/Method" or one registered twice.
  absl::Status Register(const router::v1::Endpoint& endpoint, Handler handler);

  // Adds the schema of registered methods — a serialized google.protobuf.FileDescriptorSet, as
  // generated code provides — to what HELLO tells the gateways (files are merged by name).
  // INVALID_ARGUMENT if it does not parse.
  absl::Status AddFileDescriptorSet(absl::string_view serialized);

  // Starts keeping a connection to every gateway. The host keeps itself alive while it runs:
  // call Shutdown to stop it.
  void Start();
  // Stops taking calls: tells every gateway (GOAWAY) to route no new ones here, lets the calls
  // in flight finish for up to `grace`, then cancels what is left, closes the connections and
  // calls `done` on the host's executor. Call it on that executor; a second call only waits.
  void Shutdown(absl::Duration grace = absl::ZeroDuration(), std::function<void()> done = nullptr);

  // Gateways this host is currently registered with (HELLO_ACK received).
  std::size_t registered_gateways() const;
  // Connection attempts made so far, over all gateways.
  std::size_t connection_attempts() const;
  // Calls whose handler has finished, since Start.
  std::size_t calls_handled() const;
  // Handler coroutines currently running.
  std::size_t calls_in_flight() const;

  struct Impl;

 private:
  ServiceHost(boost::asio::any_io_executor executor, ServiceHostOptions options);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stella::sdk

#endif  // STELLA_SERVICE_SDK_SERVICE_HOST_H_
