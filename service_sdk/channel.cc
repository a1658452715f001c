#include "service_sdk/channel.h"

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <random>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "runtime/async.h"
#include "runtime/keepalive.h"
#include "runtime/status_text.h"
#include "spdlog/spdlog.h"
#include "stella/router/v1/frames.pb.h"

namespace stella::sdk {
namespace {

namespace asio = boost::asio;
namespace v1 = ::stella::router::v1;
using runtime::CorrelationId;
using runtime::FramedConnection;
using runtime::FrameType;

}  // namespace

std::string CallContext::caller_identity() const {
  auto it = metadata_.find("stella-caller-identity");
  return it == metadata_.end() ? std::string() : it->second;
}

asio::awaitable<absl::StatusOr<std::optional<std::string>>> Inbox::Read() {
  while (messages_.empty() && !ended_) {
    boost::system::error_code ignored;
    wake_.expires_at(asio::steady_timer::time_point::max());
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
  if (!messages_.empty()) {
    Message message = std::move(messages_.front());
    messages_.pop_front();
    Account(message.frame_bytes);
    co_return std::optional<std::string>(std::move(message.bytes));
  }
  if (!status_.ok()) {
    co_return status_;
  }
  co_return std::optional<std::string>();
}

asio::awaitable<absl::Status> SendWindow::Acquire(std::uint32_t bytes) {
  while (available_ < static_cast<std::int64_t>(bytes) && closed_.ok()) {
    boost::system::error_code ignored;
    wake_.expires_at(asio::steady_timer::time_point::max());
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
  if (!closed_.ok()) {
    co_return closed_;
  }
  available_ -= bytes;
  co_return absl::OkStatus();
}

struct CallerLink;

struct ClientCall::State {
  State(const asio::any_io_executor& executor, std::uint32_t window)
      : responses(executor), send_window(executor, window) {}
  CorrelationId id{};
  // The connection the call was opened on (its id means something only there).
  std::weak_ptr<CallerLink> link;
  Inbox responses;
  SendWindow send_window;
  bool send_closed = false;

  // Ends the call on this side: no more sends, and `status` for the reader.
  void End(const absl::Status& status) {
    responses.End(status);
    send_window.Close(status);
  }
};

// One connection to one gateway and the calls opened on it.
struct CallerLink {
  CallerLink(GatewayAddress address_in, std::shared_ptr<FramedConnection> connection_in)
      : address(std::move(address_in)),
        connection(std::move(connection_in)),
        hello_wake(connection->executor()),
        keepalive(connection, absl::StrCat("the gateway at ", address.host, ":", address.port)) {}

  // The initial window of every stream, from HELLO_ACK.
  std::uint32_t window() const {
    return ack.has_value() && ack->initial_stream_window() > 0 ? ack->initial_stream_window()
                                                               : runtime::kDefaultMaxPayloadSize;
  }
  std::string name() const { return absl::StrCat(address.host, ":", address.port); }

  GatewayAddress address;
  std::shared_ptr<FramedConnection> connection;
  absl::flat_hash_map<CorrelationId, std::shared_ptr<ClientCall::State>, runtime::CorrelationIdHash>
      calls;
  std::uint64_t next_id = 1;
  std::optional<v1::HelloAck> ack;
  asio::steady_timer hello_wake;
  runtime::Keepalive keepalive;
  bool closed = false;
  bool draining = false;  // the gateway sent GOAWAY: no new calls here
  absl::Status closed_reason;
};

struct Channel::Impl {
  Impl(asio::any_io_executor executor_in, ChannelOptions options_in)
      : executor(std::move(executor_in)),
        options(std::move(options_in)),
        ready_wake(executor),
        backoff(executor) {}

  asio::any_io_executor executor;
  ChannelOptions options;
  // The connection new calls go to; null while reconnecting.
  std::shared_ptr<CallerLink> current;
  // Every open connection: the current one and those still finishing calls after a GOAWAY.
  std::vector<std::shared_ptr<CallerLink>> links;
  std::size_t next_gateway = 0;   // where the next round of attempts starts
  asio::steady_timer ready_wake;  // wakes WaitForReady when `current` changes
  asio::steady_timer backoff;
  bool reconnecting = false;
  bool closing = false;
  std::atomic<std::thread::id> thread;  // the io thread, as last seen handling a frame
  absl::Status last_error;
  std::minstd_rand rng{std::random_device{}()};
};

namespace {

using Impl = Channel::Impl;

void StartReconnecting(const std::shared_ptr<Impl>& impl);

// The connection stopped taking calls (closed, or draining): new calls need another one.
void LoseCurrent(const std::shared_ptr<Impl>& impl, const std::shared_ptr<CallerLink>& link) {
  if (impl->current == link) {
    impl->current = nullptr;
    impl->next_gateway = (impl->next_gateway + 1) % impl->options.gateways.size();
    StartReconnecting(impl);
  }
}

void OnLinkClosed(const std::shared_ptr<Impl>& impl, const std::shared_ptr<CallerLink>& link,
                  const absl::Status& reason) {
  link->closed = true;
  link->closed_reason = reason.ok() ? absl::UnavailableError("the channel was closed") : reason;
  link->keepalive.Stop();
  const absl::Status lost =
      absl::UnavailableError(absl::StrCat("the connection to the gateway at ", link->name(),
                                          " closed: ", link->closed_reason.message()));
  for (auto& [id, call] : link->calls) {
    call->End(lost);
  }
  link->calls.clear();
  link->hello_wake.cancel();
  if (link->ack.has_value() && link->ack->accepted()) {
    impl->last_error = lost;
  }
  std::erase(impl->links, link);
  LoseCurrent(impl, link);
}

void OnLinkFrame(const std::shared_ptr<Impl>& impl, const std::shared_ptr<CallerLink>& link,
                 const runtime::FrameView& frame) {
  impl->thread.store(std::this_thread::get_id(), std::memory_order_relaxed);
  if (link->keepalive.OnFrame(frame)) {
    return;
  }
  const int size = static_cast<int>(frame.payload.size());
  switch (frame.header.type) {
    case FrameType::kHelloAck: {
      v1::HelloAck ack;
      if (ack.ParseFromArray(frame.payload.data(), size)) {
        link->ack = std::move(ack);
      }
      link->hello_wake.cancel();
      return;
    }
    case FrameType::kGoaway:
      // Drain or violation, the gateway closes this connection soon: calls in flight finish
      // here, new ones go elsewhere.
      link->draining = true;
      LoseCurrent(impl, link);
      return;
    case FrameType::kResponse: {
      auto it = link->calls.find(frame.header.correlation_id);
      if (it == link->calls.end()) {
        return;  // a call this side cancelled; the frame was in flight
      }
      v1::Response response;
      if (!response.ParseFromArray(frame.payload.data(), size)) {
        it->second->End(absl::InternalError("the gateway sent a RESPONSE that does not parse"));
        link->calls.erase(it);
        return;
      }
      const auto frame_bytes = static_cast<std::uint32_t>(size);
      if (response.has_body()) {
        it->second->responses.Push(std::move(*response.mutable_body()), frame_bytes);
      } else {
        it->second->responses.Consumed(frame_bytes);
      }
      if (frame.header.final()) {
        it->second->End(
            absl::Status(static_cast<absl::StatusCode>(response.code()), response.message()));
        link->calls.erase(it);
      }
      return;
    }
    case FrameType::kWindowUpdate: {
      auto it = link->calls.find(frame.header.correlation_id);
      v1::WindowUpdate update;
      if (it != link->calls.end() && update.ParseFromArray(frame.payload.data(), size)) {
        it->second->send_window.Grant(update.bytes());
      }
      return;
    }
    default:
      return;
  }
}

// Connects to one gateway and exchanges HELLO; the link, accepted, or why not.
asio::awaitable<absl::StatusOr<std::shared_ptr<CallerLink>>> Dial(std::shared_ptr<Impl> impl,
                                                                  GatewayAddress address) {
  const ChannelOptions& options = impl->options;
  absl::StatusOr<std::shared_ptr<FramedConnection>> connection = co_await FramedConnection::Connect(
      impl->executor, address.host, address.port, options.tls(), options.connection);
  if (!connection.ok()) {
    co_return connection.status();
  }
  auto link = std::make_shared<CallerLink>(address, *connection);
  std::weak_ptr<Impl> weak_impl = impl;
  std::weak_ptr<CallerLink> weak_link = link;
  link->connection->Start(
      [weak_impl, weak_link](const runtime::FrameView& frame) {
        auto alive_impl = weak_impl.lock();
        auto alive_link = weak_link.lock();
        if (alive_impl && alive_link) {
          OnLinkFrame(alive_impl, alive_link, frame);
        }
      },
      [weak_impl, weak_link](const absl::Status& reason) {
        auto alive_impl = weak_impl.lock();
        auto alive_link = weak_link.lock();
        if (alive_impl && alive_link) {
          OnLinkClosed(alive_impl, alive_link, reason);
        }
      });
  impl->links.push_back(link);
  v1::Hello hello;
  hello.set_role(v1::ROLE_CALLER);
  hello.set_service_name(options.name);
  if (!options.region.empty()) {
    (*hello.mutable_metadata())["region"] = options.region;
  }
  if (absl::Status sent = link->connection->Send(FrameType::kHello, 0, CorrelationId{}, hello);
      !sent.ok()) {
    co_return sent;
  }
  link->hello_wake.expires_after(absl::ToChronoMilliseconds(options.connection.handshake_timeout));
  boost::system::error_code ec;
  while (!link->ack.has_value() && !link->closed) {
    co_await link->hello_wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      link->connection->Close(absl::DeadlineExceededError("no HELLO_ACK"));
      co_return absl::DeadlineExceededError(
          absl::StrCat("the gateway at ", link->name(), " sent no HELLO_ACK within ",
                       absl::FormatDuration(options.connection.handshake_timeout)));
    }
  }
  if (!link->ack.has_value()) {
    co_return absl::UnavailableError(
        absl::StrCat("the gateway at ", link->name(),
                     " closed the connection before HELLO_ACK: ", link->closed_reason.message()));
  }
  if (!link->ack->accepted()) {
    link->connection->Close(absl::OkStatus());
    co_return absl::Status(static_cast<absl::StatusCode>(link->ack->code()),
                           absl::StrCat("the gateway at ", link->name(),
                                        " refused this caller: ", link->ack->reason()));
  }
  if (impl->closing) {
    link->connection->Close(absl::OkStatus());
    co_return absl::UnavailableError("the channel was closed");
  }
  link->keepalive.Begin(absl::Milliseconds(link->ack->heartbeat_interval_ms()));
  co_return link;
}

// One round over the gateway list, starting at `next_gateway`: the first that accepts becomes
// current. The errors of all, joined, if none does.
asio::awaitable<absl::Status> TryEachGateway(std::shared_ptr<Impl> impl) {
  std::string errors;
  const std::size_t n = impl->options.gateways.size();
  for (std::size_t i = 0; i < n && !impl->closing; ++i) {
    const std::size_t index = (impl->next_gateway + i) % n;
    absl::StatusOr<std::shared_ptr<CallerLink>> link =
        co_await Dial(impl, impl->options.gateways[index]);
    if (link.ok()) {
      impl->current = *std::move(link);
      impl->next_gateway = index;
      impl->ready_wake.cancel();
      co_return absl::OkStatus();
    }
    impl->last_error = link.status();
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", link.status().message());
  }
  co_return absl::Status(
      n == 1 ? impl->last_error.code() : absl::StatusCode::kUnavailable,
      n == 1 ? errors : absl::StrCat("no gateway accepted the channel: ", errors));
}

// Rounds over the gateway list with jittered, doubling pauses until one accepts or the channel
// closes. Holds the channel weakly between attempts.
asio::awaitable<void> Reconnect(std::weak_ptr<Impl> weak) {
  absl::Duration delay;
  {
    auto impl = weak.lock();
    if (impl == nullptr) {
      co_return;
    }
    delay = impl->options.initial_reconnect_delay;
  }
  while (true) {
    auto impl = weak.lock();
    if (impl == nullptr || impl->closing) {
      co_return;
    }
    if (absl::Status round = co_await TryEachGateway(impl); round.ok() || impl->closing) {
      impl->reconnecting = false;
      co_return;
    }
    std::uniform_int_distribution<std::int64_t> jitter(0, absl::ToInt64Microseconds(delay));
    const absl::Duration wait = absl::Microseconds(jitter(impl->rng));
    spdlog::warn("channel: no gateway reachable ({}); retrying in {}",
                 std::string(impl->last_error.message()), absl::FormatDuration(wait));
    delay = std::min(delay * 2, impl->options.max_reconnect_delay);
    impl->backoff.expires_after(absl::ToChronoMicroseconds(wait));
    asio::steady_timer& backoff = impl->backoff;
    impl.reset();  // the channel may go away while this waits
    boost::system::error_code ignored;
    co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
}

void StartReconnecting(const std::shared_ptr<Impl>& impl) {
  if (impl->reconnecting || impl->closing) {
    return;
  }
  impl->reconnecting = true;
  asio::co_spawn(impl->executor, Reconnect(impl),
                 runtime::LogCoroutineFailure("channel reconnect"));
}

}  // namespace

Channel::~Channel() { Close(); }

asio::awaitable<absl::StatusOr<std::shared_ptr<Channel>>> Channel::Connect(
    asio::any_io_executor executor, ChannelOptions options) {
  if (options.gateways.empty()) {
    co_return absl::InvalidArgumentError("ChannelOptions.gateways is empty: name a gateway");
  }
  if (!options.tls) {
    co_return absl::InvalidArgumentError("ChannelOptions.tls is not set");
  }
  auto impl = std::make_shared<Impl>(std::move(executor), std::move(options));
  if (absl::Status connected = co_await TryEachGateway(impl); !connected.ok()) {
    impl->closing = true;
    co_return connected;
  }
  co_return std::shared_ptr<Channel>(new Channel(std::move(impl)));
}

void Channel::Close() {
  impl_->closing = true;
  impl_->current = nullptr;
  impl_->backoff.cancel();
  impl_->ready_wake.cancel();
  const auto links = impl_->links;  // a close may remove a link at once
  for (const auto& link : links) {
    link->connection->Close(absl::OkStatus());
  }
}

bool Channel::connected() const { return impl_->current != nullptr; }

std::string Channel::gateway() const {
  return impl_->current == nullptr ? std::string() : impl_->current->name();
}

absl::Status Channel::last_error() const { return impl_->last_error; }

asio::any_io_executor Channel::executor() const { return impl_->executor; }

bool Channel::running_in_this_thread() const {
  return impl_->thread.load(std::memory_order_relaxed) == std::this_thread::get_id();
}

asio::awaitable<absl::Status> Channel::WaitForReady(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (impl_->current == nullptr && !impl_->closing && absl::Now() < deadline) {
    boost::system::error_code ignored;
    impl_->ready_wake.expires_after(absl::ToChronoMicroseconds(deadline - absl::Now()));
    co_await impl_->ready_wake.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
  if (impl_->current != nullptr) {
    co_return absl::OkStatus();
  }
  co_return NotConnected();
}

absl::Status Channel::NotConnected() const {
  if (impl_->closing) {
    return absl::UnavailableError("the channel was closed");
  }
  return absl::UnavailableError(
      absl::StrCat("no gateway connection (reconnecting); last error: ",
                   impl_->last_error.ok() ? "none" : impl_->last_error.message()));
}

absl::StatusOr<std::unique_ptr<ClientCall>> Channel::Open(const std::string& method,
                                                          const CallOptions& options,
                                                          std::optional<std::string> first,
                                                          bool close_send) {
  const std::shared_ptr<CallerLink> link = impl_->current;
  if (link == nullptr) {
    return NotConnected();
  }
  auto state = std::make_shared<ClientCall::State>(impl_->executor, link->window());
  state->id = runtime::CorrelationIdFromCounter(link->next_id++);
  state->link = link;
  std::weak_ptr<CallerLink> weak = link;
  state->responses.set_flow_control(link->window(), [weak, id = state->id](std::uint32_t bytes) {
    auto alive = weak.lock();
    if (alive == nullptr) {
      return;
    }
    v1::WindowUpdate update;
    update.set_bytes(bytes);
    (void)alive->connection->Send(FrameType::kWindowUpdate, 0, id, update);
  });
  v1::Request request;
  request.set_method(method);
  request.mutable_metadata()->insert(options.metadata.begin(), options.metadata.end());
  if (options.timeout > absl::ZeroDuration()) {
    request.set_timeout_us(static_cast<std::uint64_t>(absl::ToInt64Microseconds(options.timeout)));
  }
  if (first.has_value()) {
    request.set_body(std::move(*first));
  }
  const std::uint16_t flags = close_send ? runtime::kFlagFinal : 0;
  // The opening frame always fits: a window is never smaller than the largest frame.
  if (!state->send_window.TryAcquire(static_cast<std::uint32_t>(request.ByteSizeLong()))) {
    return absl::ResourceExhaustedError(absl::StrCat("the first message of ", method,
                                                     " is larger than the stream window of ",
                                                     link->window(), " bytes"));
  }
  if (absl::Status sent = link->connection->Send(FrameType::kRequest, flags, state->id, request);
      !sent.ok()) {
    return sent;
  }
  state->send_closed = close_send;
  link->calls[state->id] = state;
  return std::unique_ptr<ClientCall>(new ClientCall(shared_from_this(), std::move(state)));
}

asio::awaitable<absl::StatusOr<std::string>> Channel::Call(std::string method, std::string request,
                                                           CallOptions options) {
  if (options.wait_for_ready && impl_->current == nullptr) {
    const absl::Duration wait = options.timeout > absl::ZeroDuration()
                                    ? options.timeout
                                    : impl_->options.connection.handshake_timeout;
    const absl::Time start = absl::Now();
    if (absl::Status ready = co_await WaitForReady(wait); !ready.ok()) {
      co_return ready;
    }
    if (options.timeout > absl::ZeroDuration()) {
      options.timeout = std::max(absl::Microseconds(1), options.timeout - (absl::Now() - start));
    }
  }
  absl::StatusOr<std::unique_ptr<ClientCall>> call =
      Open(method, options, std::move(request), /*close_send=*/true);
  if (!call.ok()) {
    co_return call.status();
  }
  absl::StatusOr<std::optional<std::string>> response = co_await (*call)->Read();
  if (!response.ok()) {
    co_return response.status();
  }
  if (!response->has_value()) {
    co_return absl::InternalError(
        absl::StrCat("the unary call ", method, " ended without a response message"));
  }
  co_return std::move(**response);
}

ClientCall::~ClientCall() {
  if (!state_->responses.ended()) {
    Cancel("the caller dropped the call");
  }
}

asio::awaitable<absl::Status> ClientCall::Write(std::string message) {
  if (state_->send_closed || state_->responses.ended()) {
    co_return absl::FailedPreconditionError("the request stream of this call is closed");
  }
  v1::Request request;
  request.set_body(std::move(message));
  if (absl::Status room =
          co_await state_->send_window.Acquire(static_cast<std::uint32_t>(request.ByteSizeLong()));
      !room.ok()) {
    co_return room;
  }
  auto link = state_->link.lock();
  if (link == nullptr) {
    co_return absl::UnavailableError("the call's gateway connection is gone");
  }
  co_return link->connection->Send(FrameType::kRequest, 0, state_->id, request);
}

absl::Status ClientCall::CloseSend() {
  if (state_->send_closed) {
    return absl::OkStatus();
  }
  state_->send_closed = true;
  auto link = state_->link.lock();
  if (state_->responses.ended() || link == nullptr) {
    return absl::OkStatus();
  }
  return link->connection->Send(FrameType::kRequest, runtime::kFlagFinal, state_->id,
                                v1::Request());
}

asio::awaitable<absl::StatusOr<std::optional<std::string>>> ClientCall::Read() {
  co_return co_await state_->responses.Read();
}

void ClientCall::Cancel(const std::string& reason) {
  if (state_->responses.ended()) {
    return;
  }
  state_->End(absl::CancelledError(reason));
  auto link = state_->link.lock();
  if (link == nullptr) {
    return;
  }
  v1::Cancel cancel;
  cancel.set_code(static_cast<int>(absl::StatusCode::kCancelled));
  cancel.set_reason(runtime::StatusText(reason));
  (void)link->connection->Send(FrameType::kCancel, 0, state_->id, cancel);
  link->calls.erase(state_->id);
}

}  // namespace stella::sdk
