#include "service_sdk/service_host.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.pb.h"
#include "runtime/async.h"
#include "runtime/keepalive.h"
#include "runtime/status_text.h"
#include "spdlog/spdlog.h"

namespace stella::sdk {
namespace {

namespace asio = boost::asio;
namespace v1 = ::stella::router::v1;
using runtime::CorrelationId;
using runtime::FramedConnection;
using runtime::FrameType;

std::string RandomInstanceId() {
  std::random_device device;
  return absl::StrCat(absl::Hex(device()), "-", absl::Hex(device()));
}

bool IsFullMethodName(const std::string& method) {
  const std::size_t slash = method.find('/');
  return slash != std::string::npos && slash > 0 && slash + 1 < method.size() &&
         method.find('/', slash + 1) == std::string::npos;
}

}  // namespace

// What the host does to a call that its handler does not see.
struct HostAccess {
  static Inbox& requests(ServerCall& call) { return call.requests_; }
  static SendWindow& window(ServerCall& call) { return call.window_; }
  static std::optional<std::string>& response(ServerCall& call) { return call.response_; }
  static void set_send(ServerCall& call,
                       std::function<absl::Status(const v1::Response&, bool)> send) {
    call.send_ = std::move(send);
  }
};

asio::awaitable<absl::Status> ServerCall::Write(std::string message) {
  if (context_.cancelled()) {
    co_return context_.cancel_reason();
  }
  v1::Response response;
  response.set_body(std::move(message));
  if (absl::Status room =
          co_await window_.Acquire(static_cast<std::uint32_t>(response.ByteSizeLong()));
      !room.ok()) {
    co_return room;
  }
  co_return send_(response, /*final=*/false);
}

// One gateway: its connection (while there is one) and the calls it brought.
struct Link {
  explicit Link(GatewayAddress address_in, const asio::any_io_executor& executor)
      : address(std::move(address_in)), wake(executor) {}

  GatewayAddress address;
  std::shared_ptr<FramedConnection> connection;
  std::unique_ptr<runtime::Keepalive> keepalive;  // while connected
  absl::flat_hash_map<CorrelationId, std::shared_ptr<ServerCall>, runtime::CorrelationIdHash> calls;
  asio::steady_timer wake;  // wakes the link's loop: connection closed, backoff cut short
  std::uint32_t window = runtime::kDefaultMaxPayloadSize;  // from HELLO_ACK
  // The TLS snapshot of the last connection attempt: a refused certificate is retried as soon as
  // the provider has a new one.
  std::shared_ptr<const runtime::tls::TlsContext> tls_used;
  std::string refusal_logged;  // the last refusal logged at error level
  bool registered = false;
  bool closed = true;
  // The gateway sent GOAWAY: it routes no new call over this connection (during a shutdown, the
  // acknowledgement of ours).
  bool gateway_goaway = false;
  absl::Status refusal;     // set when the gateway refused the HELLO
  absl::Status last_error;  // why the last connection ended
};

struct ServiceHost::Impl {
  Impl(asio::any_io_executor executor_in, ServiceHostOptions options_in)
      : executor(std::move(executor_in)), options(std::move(options_in)) {}

  asio::any_io_executor executor;
  ServiceHostOptions options;
  absl::flat_hash_map<std::string, std::pair<v1::Endpoint, Handler>> handlers;
  google::protobuf::FileDescriptorSet schema;  // sent in HELLO
  std::vector<std::shared_ptr<Link>> links;
  std::size_t calls_in_flight = 0;
  std::size_t calls_handled = 0;
  std::size_t connection_attempts = 0;
  bool stopping = false;
  std::unique_ptr<asio::steady_timer> shutdown_timer;
  std::minstd_rand rng{std::random_device{}()};
};

namespace {

using Impl = ServiceHost::Impl;

// Sends the final RESPONSE of a call (unless it was cancelled), within its window, and forgets
// it.
asio::awaitable<void> FinishCall(std::shared_ptr<Link> link_ptr, CorrelationId id,
                                 absl::Status status) {
  Link& link = *link_ptr;
  auto found = link.calls.find(id);
  if (found == link.calls.end()) {
    co_return;  // cancelled, or the connection went away
  }
  std::shared_ptr<ServerCall> call_ptr = found->second;
  ServerCall& call = *call_ptr;
  v1::Response response;
  response.set_code(static_cast<int>(status.code()));
  response.set_message(runtime::StatusText(status.message()));
  if (status.ok() && HostAccess::response(call).has_value()) {
    response.set_body(std::move(*HostAccess::response(call)));
  }
  std::uint16_t flags = runtime::kFlagFinal;
  if (!status.ok()) {
    flags |= runtime::kFlagError;
  }
  const absl::Status room = co_await HostAccess::window(call).Acquire(
      static_cast<std::uint32_t>(response.ByteSizeLong()));
  auto it = link.calls.find(id);
  if (!room.ok() || it == link.calls.end() || it->second != call_ptr) {
    co_return;  // cancelled while waiting for window
  }
  if (link.connection) {
    (void)link.connection->Send(FrameType::kResponse, flags, id, response);
  }
  link.calls.erase(it);
}

// `host` is unused but keeps the host (and `impl`) alive while the handler runs.
asio::awaitable<void> RunHandler(std::shared_ptr<ServiceHost> /*host*/, Impl* impl,
                                 std::shared_ptr<Link> link, CorrelationId id,
                                 std::shared_ptr<ServerCall> call, Handler handler) {
  ++impl->calls_in_flight;
  absl::Status status;
  try {
    status = co_await handler(*call);
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("the handler of ", call->context().method(),
                                              " threw an exception: ", e.what()));
  } catch (...) {
    status = absl::InternalError(absl::StrCat("the handler of ", call->context().method(),
                                              " threw a non-standard exception"));
  }
  --impl->calls_in_flight;
  ++impl->calls_handled;
  co_await FinishCall(link, id, status);
}

void OnRequest(const std::shared_ptr<ServiceHost>& host, Impl* impl,
               const std::shared_ptr<Link>& link, const runtime::FrameView& frame) {
  const CorrelationId& id = frame.header.correlation_id;
  v1::Request request;
  if (!request.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()))) {
    link->connection->Close(absl::InvalidArgumentError("the gateway sent a malformed REQUEST"));
    return;
  }
  const auto frame_bytes = static_cast<std::uint32_t>(frame.payload.size());
  auto existing = link->calls.find(id);
  if (existing != link->calls.end()) {
    if (request.has_body()) {
      HostAccess::requests(*existing->second).Push(std::move(*request.mutable_body()), frame_bytes);
    } else {
      HostAccess::requests(*existing->second).Consumed(frame_bytes);
    }
    if (frame.header.final()) {
      HostAccess::requests(*existing->second).End(absl::OkStatus());
    }
    return;
  }
  // While shutting down, a call that arrives before the gateway acknowledged the drain was routed
  // before the gateway read our GOAWAY: it is served, not failed.
  const bool refuse = impl->stopping && link->gateway_goaway;
  auto handler = impl->handlers.find(request.method());
  if (handler == impl->handlers.end() || refuse) {
    v1::Response response;
    const absl::Status status =
        refuse ? absl::UnavailableError("the service is shutting down")
               : absl::NotFoundError(absl::StrCat("service \"", impl->options.service_name,
                                                  "\" has no handler for ", request.method()));
    response.set_code(static_cast<int>(status.code()));
    response.set_message(runtime::StatusText(status.message()));
    (void)link->connection->Send(FrameType::kResponse, runtime::kFlagFinal | runtime::kFlagError,
                                 id, response);
    return;
  }
  std::map<std::string, std::string> metadata(request.metadata().begin(), request.metadata().end());
  const absl::Time deadline =
      request.timeout_us() > 0
          ? absl::Now() + absl::Microseconds(static_cast<std::int64_t>(request.timeout_us()))
          : absl::InfiniteFuture();
  auto call = std::make_shared<ServerCall>(
      CallContext(request.method(), std::move(metadata), deadline), impl->executor, link->window);
  std::weak_ptr<Link> weak_link = link;
  HostAccess::requests(*call).set_flow_control(link->window, [weak_link, id](std::uint32_t bytes) {
    auto alive = weak_link.lock();
    if (alive == nullptr || alive->connection == nullptr) {
      return;
    }
    v1::WindowUpdate update;
    update.set_bytes(bytes);
    (void)alive->connection->Send(FrameType::kWindowUpdate, 0, id, update);
  });
  HostAccess::set_send(*call,
                       [weak_link, id](const v1::Response& response, bool final) -> absl::Status {
                         auto alive = weak_link.lock();
                         if (alive == nullptr || alive->connection == nullptr) {
                           return absl::UnavailableError("the gateway connection is gone");
                         }
                         return alive->connection->Send(
                             FrameType::kResponse, final ? runtime::kFlagFinal : 0, id, response);
                       });
  if (request.has_body()) {
    HostAccess::requests(*call).Push(std::move(*request.mutable_body()), frame_bytes);
  } else {
    HostAccess::requests(*call).Consumed(frame_bytes);
  }
  if (frame.header.final()) {
    HostAccess::requests(*call).End(absl::OkStatus());
  }
  link->calls[id] = call;
  asio::co_spawn(impl->executor, RunHandler(host, impl, link, id, call, handler->second.second),
                 runtime::LogCoroutineFailure(absl::StrCat("handler of ", request.method())));
}

void OnFrame(const std::shared_ptr<ServiceHost>& host, Impl* impl,
             const std::shared_ptr<Link>& link, const runtime::FrameView& frame) {
  if (link->keepalive->OnFrame(frame)) {
    return;
  }
  const int size = static_cast<int>(frame.payload.size());
  switch (frame.header.type) {
    case FrameType::kHelloAck: {
      v1::HelloAck ack;
      if (!ack.ParseFromArray(frame.payload.data(), size)) {
        link->connection->Close(absl::InvalidArgumentError("malformed HELLO_ACK"));
        return;
      }
      if (!ack.accepted()) {
        link->refusal = absl::Status(static_cast<absl::StatusCode>(ack.code()), ack.reason());
        link->connection->Close(link->refusal);
        return;
      }
      link->registered = true;
      if (ack.initial_stream_window() > 0) {
        link->window = ack.initial_stream_window();
      }
      link->keepalive->Begin(absl::Milliseconds(ack.heartbeat_interval_ms()));
      spdlog::info("service {} registered with gateway {} at {}:{}", impl->options.service_name,
                   ack.gateway_id(), link->address.host, link->address.port);
      return;
    }
    case FrameType::kRequest:
      OnRequest(host, impl, link, frame);
      return;
    case FrameType::kCancel: {
      auto it = link->calls.find(frame.header.correlation_id);
      if (it == link->calls.end()) {
        return;
      }
      v1::Cancel cancel;
      (void)cancel.ParseFromArray(frame.payload.data(), size);
      const absl::Status why(cancel.code() == 0 ? absl::StatusCode::kCancelled
                                                : static_cast<absl::StatusCode>(cancel.code()),
                             cancel.reason());
      it->second->context().Cancel(why);
      HostAccess::requests(*it->second).End(why);
      HostAccess::window(*it->second).Close(why);
      link->calls.erase(it);  // nothing more is sent for it
      return;
    }
    case FrameType::kWindowUpdate: {
      auto it = link->calls.find(frame.header.correlation_id);
      v1::WindowUpdate update;
      if (it != link->calls.end() && update.ParseFromArray(frame.payload.data(), size)) {
        HostAccess::window(*it->second).Grant(update.bytes());
      }
      return;
    }
    case FrameType::kGoaway:
      link->gateway_goaway = true;  // a drain (the close follows) or the answer to ours
      return;
    default:
      return;
  }
}

// Runs one connection to the gateway from connect to close.
asio::awaitable<void> Serve(std::shared_ptr<ServiceHost> host, Impl* impl,
                            std::shared_ptr<Link> link) {
  ++impl->connection_attempts;
  link->tls_used = impl->options.tls();
  absl::StatusOr<std::shared_ptr<FramedConnection>> connection =
      co_await FramedConnection::Connect(impl->executor, link->address.host, link->address.port,
                                         link->tls_used, impl->options.connection);
  if (!connection.ok()) {
    link->last_error = connection.status();
    co_return;
  }
  link->connection = *connection;
  link->keepalive = std::make_unique<runtime::Keepalive>(
      link->connection,
      absl::StrCat("the gateway at ", link->address.host, ":", link->address.port));
  link->closed = false;
  link->registered = false;
  link->gateway_goaway = false;
  link->refusal = absl::OkStatus();
  std::weak_ptr<Link> weak_link = link;
  std::weak_ptr<ServiceHost> weak_host = host;
  link->connection->Start(
      [weak_host, weak_link, impl](const runtime::FrameView& frame) {
        auto alive_host = weak_host.lock();
        auto alive_link = weak_link.lock();
        if (alive_host && alive_link) {
          OnFrame(alive_host, impl, alive_link, frame);
        }
      },
      [weak_link](const absl::Status& reason) {
        auto alive = weak_link.lock();
        if (alive == nullptr) {
          return;
        }
        alive->closed = true;
        alive->last_error = reason;
        alive->keepalive->Stop();
        const absl::Status lost = absl::UnavailableError(
            absl::StrCat("the connection to the gateway closed: ", reason.message()));
        for (auto& [id, call] : alive->calls) {
          call->context().Cancel(lost);
          HostAccess::requests(*call).End(lost);
          HostAccess::window(*call).Close(lost);
        }
        alive->calls.clear();
        alive->wake.cancel();
      });
  v1::Hello hello;
  hello.set_role(v1::ROLE_SERVICE);
  hello.set_service_name(impl->options.service_name);
  hello.set_instance_id(impl->options.instance_id);
  if (!impl->options.region.empty()) {
    (*hello.mutable_metadata())["region"] = impl->options.region;
  }
  if (!impl->options.version.empty()) {
    (*hello.mutable_metadata())["version"] = impl->options.version;
  }
  std::vector<const v1::Endpoint*> endpoints;
  for (const auto& [method, entry] : impl->handlers) {
    endpoints.push_back(&entry.first);
  }
  std::sort(endpoints.begin(), endpoints.end(),
            [](const v1::Endpoint* a, const v1::Endpoint* b) { return a->method() < b->method(); });
  for (const v1::Endpoint* endpoint : endpoints) {
    *hello.add_endpoints() = *endpoint;  // in a stable order, for /routes and logs
  }
  if (impl->schema.file_size() > 0) {
    hello.set_file_descriptor_set(impl->schema.SerializeAsString());
  }
  (void)link->connection->Send(FrameType::kHello, 0, CorrelationId{}, hello);
  while (!link->closed) {
    boost::system::error_code ignored;
    link->wake.expires_at(asio::steady_timer::time_point::max());
    co_await link->wake.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
  link->connection.reset();
}

// Waits `wait` before the next attempt, or less: Shutdown cuts it short, and so does a new TLS
// snapshot from the certificate provider when `until_new_certificate` (the last one was refused).
asio::awaitable<void> Pause(Impl* impl, std::shared_ptr<Link> link, absl::Duration wait,
                            bool until_new_certificate) {
  const absl::Time until = absl::Now() + wait;
  const absl::Duration slice =
      until_new_certificate ? absl::Milliseconds(250) : absl::InfiniteDuration();
  while (!impl->stopping && absl::Now() < until) {
    boost::system::error_code ignored;
    link->wake.expires_after(absl::ToChronoMicroseconds(std::min(until - absl::Now(), slice)));
    co_await link->wake.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    if (until_new_certificate && impl->options.tls() != link->tls_used) {
      spdlog::info("the certificate provider has a new certificate; retrying gateway {}:{} now",
                   link->address.host, link->address.port);
      co_return;
    }
  }
}

// Keeps a connection to one gateway: reconnects with exponential backoff and full jitter, and
// after a refusal or an authentication failure waits the maximum delay instead of hammering.
asio::awaitable<void> Maintain(std::shared_ptr<ServiceHost> host, Impl* impl,
                               std::shared_ptr<Link> link) {
  absl::Duration delay = impl->options.initial_reconnect_delay;
  while (!impl->stopping) {
    co_await Serve(host, impl, link);
    const bool was_registered = link->registered;
    link->registered = false;
    if (impl->stopping) {
      break;
    }
    if (was_registered) {
      delay = impl->options.initial_reconnect_delay;
      link->refusal_logged.clear();
    }
    const absl::Status& why = link->refusal.ok() ? link->last_error : link->refusal;
    const bool auth = why.code() == absl::StatusCode::kUnauthenticated ||
                      why.code() == absl::StatusCode::kPermissionDenied;
    absl::Duration wait;
    if (auth) {
      wait = impl->options.max_reconnect_delay;
      // Logged once per distinct reason: a refusal repeats until someone fixes the certificate.
      const bool repeated = link->refusal_logged == why.message();
      spdlog::log(repeated ? spdlog::level::debug : spdlog::level::err,
                  "gateway {}:{} refused service {}: {}; retrying when the certificate changes "
                  "or in {}",
                  link->address.host, link->address.port, impl->options.service_name,
                  std::string(why.message()), absl::FormatDuration(wait));
      link->refusal_logged = std::string(why.message());
    } else {
      std::uniform_int_distribution<std::int64_t> jitter(0, absl::ToInt64Microseconds(delay));
      wait = absl::Microseconds(jitter(impl->rng));
      spdlog::warn("connection to gateway {}:{} lost or failed ({}); reconnecting in {}",
                   link->address.host, link->address.port, std::string(why.message()),
                   absl::FormatDuration(wait));
    }
    delay = std::min(delay * 2, impl->options.max_reconnect_delay);
    co_await Pause(impl, link, wait, /*until_new_certificate=*/auth);
  }
}

}  // namespace

ServiceHost::ServiceHost(asio::any_io_executor executor, ServiceHostOptions options)
    : impl_(std::make_unique<Impl>(std::move(executor), std::move(options))) {
  if (impl_->options.instance_id.empty()) {
    impl_->options.instance_id = RandomInstanceId();
  }
}

ServiceHost::~ServiceHost() = default;

std::shared_ptr<ServiceHost> ServiceHost::Create(asio::any_io_executor executor,
                                                 ServiceHostOptions options) {
  return std::shared_ptr<ServiceHost>(new ServiceHost(std::move(executor), std::move(options)));
}

absl::Status ServiceHost::Register(const v1::Endpoint& endpoint, Handler handler) {
  if (!IsFullMethodName(endpoint.method())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", endpoint.method(), "\" is not a full method name \"package.Service/Method\""));
  }
  if (!impl_->handlers.emplace(endpoint.method(), std::make_pair(endpoint, std::move(handler)))
           .second) {
    return absl::InvalidArgumentError(
        absl::StrCat("a handler for ", endpoint.method(), " is already registered"));
  }
  return absl::OkStatus();
}

absl::Status ServiceHost::AddFileDescriptorSet(absl::string_view serialized) {
  google::protobuf::FileDescriptorSet set;
  if (!set.ParseFromArray(serialized.data(), static_cast<int>(serialized.size()))) {
    return absl::InvalidArgumentError("the schema is not a serialized FileDescriptorSet");
  }
  for (const google::protobuf::FileDescriptorProto& file : set.file()) {
    const bool known = std::any_of(impl_->schema.file().begin(), impl_->schema.file().end(),
                                   [&file](const google::protobuf::FileDescriptorProto& have) {
                                     return have.name() == file.name();
                                   });
    if (!known) {
      *impl_->schema.add_file() = file;
    }
  }
  return absl::OkStatus();
}

void ServiceHost::Start() {
  for (const GatewayAddress& address : impl_->options.gateways) {
    auto link = std::make_shared<Link>(address, impl_->executor);
    impl_->links.push_back(link);
    asio::co_spawn(impl_->executor, Maintain(shared_from_this(), impl_.get(), link),
                   runtime::LogCoroutineFailure(
                       absl::StrCat("connection to gateway ", address.host, ":", address.port)));
  }
}

namespace {

// Closes every gateway connection once each gateway has acknowledged the drain and no call is
// left, or once `deadline` has passed (checked every 10 ms).
void WatchShutdown(const std::shared_ptr<ServiceHost>& host, Impl* impl, absl::Time deadline,
                   const std::function<void()>& done) {
  std::size_t open_calls = 0;
  bool unacknowledged = false;
  for (const auto& link : impl->links) {
    open_calls += link->calls.size();
    unacknowledged |= link->registered && !link->closed && !link->gateway_goaway;
  }
  if ((open_calls > 0 || unacknowledged) && absl::Now() < deadline) {
    impl->shutdown_timer->expires_after(std::chrono::milliseconds(10));
    impl->shutdown_timer->async_wait([host, impl, deadline, done](boost::system::error_code ec) {
      if (!ec) {
        WatchShutdown(host, impl, deadline, done);
      }
    });
    return;
  }
  if (open_calls > 0) {
    spdlog::warn("service {}: shutdown grace period over with {} call(s) unfinished; cancelling",
                 impl->options.service_name, open_calls);
  }
  for (const auto& link : impl->links) {
    if (link->connection) {
      link->connection->Close(absl::OkStatus());  // cancels what is left
    }
    link->wake.cancel();
  }
  if (done) {
    done();
  }
}

}  // namespace

void ServiceHost::Shutdown(absl::Duration grace, std::function<void()> done) {
  if (impl_->stopping) {
    if (done) {
      asio::post(impl_->executor, std::move(done));
    }
    return;
  }
  impl_->stopping = true;
  // GOAWAY drain: each gateway stops routing new calls here at once.
  v1::Goaway goaway;
  goaway.set_reason(absl::StrCat("service ", impl_->options.service_name, " is shutting down"));
  goaway.set_drain_timeout_ms(static_cast<std::uint32_t>(absl::ToInt64Milliseconds(grace)));
  for (const auto& link : impl_->links) {
    if (link->connection && !link->closed) {
      (void)link->connection->Send(FrameType::kGoaway, 0, CorrelationId{}, goaway);
    }
    link->wake.cancel();  // ends a backoff wait
  }
  impl_->shutdown_timer = std::make_unique<asio::steady_timer>(impl_->executor);
  WatchShutdown(shared_from_this(), impl_.get(), absl::Now() + grace, done);
}

std::size_t ServiceHost::registered_gateways() const {
  std::size_t n = 0;
  for (const auto& link : impl_->links) {
    n += link->registered ? 1 : 0;
  }
  return n;
}

std::size_t ServiceHost::calls_in_flight() const { return impl_->calls_in_flight; }

std::size_t ServiceHost::connection_attempts() const { return impl_->connection_attempts; }

std::size_t ServiceHost::calls_handled() const { return impl_->calls_handled; }

}  // namespace stella::sdk
