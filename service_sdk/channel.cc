#include "service_sdk/channel.h"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "stella/router/v1/frames.pb.h"

namespace stella::sdk {
namespace {

namespace asio = boost::asio;
namespace v1 = ::stella::router::v1;
using runtime::CorrelationId;
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

struct ClientCall::State {
  State(const asio::any_io_executor& executor, std::uint32_t window)
      : responses(executor), send_window(executor, window) {}
  CorrelationId id{};
  Inbox responses;
  SendWindow send_window;
  bool send_closed = false;

  // Ends the call on this side: no more sends, and `status` for the reader.
  void End(const absl::Status& status) {
    responses.End(status);
    send_window.Close(status);
  }
};

struct Channel::Impl {
  explicit Impl(const asio::any_io_executor& executor) : hello_wake(executor) {}
  absl::flat_hash_map<CorrelationId, std::shared_ptr<ClientCall::State>, runtime::CorrelationIdHash>
      calls;
  std::uint64_t next_id = 1;
  std::optional<v1::HelloAck> ack;
  // The initial window of every stream, from HELLO_ACK.
  std::uint32_t window() const {
    return ack.has_value() && ack->initial_stream_window() > 0 ? ack->initial_stream_window()
                                                               : runtime::kDefaultMaxPayloadSize;
  }
  asio::steady_timer hello_wake;
  bool closed = false;
};

Channel::Channel(std::shared_ptr<runtime::FramedConnection> connection)
    : connection_(std::move(connection)), impl_(std::make_unique<Impl>(connection_->executor())) {}

// Dropping the last reference closes the connection (its coroutines would otherwise keep it open).
Channel::~Channel() { connection_->Close(absl::OkStatus()); }

asio::awaitable<absl::StatusOr<std::shared_ptr<Channel>>> Channel::Connect(
    asio::any_io_executor executor, ChannelOptions options) {
  absl::StatusOr<std::shared_ptr<runtime::FramedConnection>> connection =
      co_await runtime::FramedConnection::Connect(executor, options.host, options.port, options.tls,
                                                  options.connection);
  if (!connection.ok()) {
    co_return connection.status();
  }
  std::shared_ptr<Channel> channel(new Channel(*connection));
  std::weak_ptr<Channel> weak = channel;
  channel->connection_->Start(
      [weak](const runtime::FrameView& frame) {
        if (auto self = weak.lock()) {
          self->OnFrame(frame);
        }
      },
      [weak](const absl::Status& reason) {
        if (auto self = weak.lock()) {
          self->OnClosed(reason);
        }
      });
  v1::Hello hello;
  hello.set_role(v1::ROLE_CALLER);
  hello.set_service_name(options.name);
  if (!options.region.empty()) {
    (*hello.mutable_metadata())["region"] = options.region;
  }
  if (absl::Status sent = channel->connection_->Send(FrameType::kHello, 0, CorrelationId{}, hello);
      !sent.ok()) {
    co_return sent;
  }
  Impl& impl = *channel->impl_;
  impl.hello_wake.expires_after(absl::ToChronoMilliseconds(options.connection.handshake_timeout));
  boost::system::error_code ec;
  while (!impl.ack.has_value() && !impl.closed) {
    co_await impl.hello_wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      channel->Close();
      co_return absl::DeadlineExceededError(absl::StrCat(
          "the gateway at ", options.host, ":", options.port, " sent no HELLO_ACK within ",
          absl::FormatDuration(options.connection.handshake_timeout)));
    }
  }
  if (!impl.ack.has_value()) {
    co_return absl::UnavailableError(
        absl::StrCat("the gateway closed the connection before "
                     "HELLO_ACK: ",
                     channel->closed_reason_.message()));
  }
  if (!impl.ack->accepted()) {
    channel->Close();
    co_return absl::Status(static_cast<absl::StatusCode>(impl.ack->code()),
                           absl::StrCat("the gateway refused this caller: ", impl.ack->reason()));
  }
  co_return channel;
}

void Channel::OnFrame(const runtime::FrameView& frame) {
  const int size = static_cast<int>(frame.payload.size());
  switch (frame.header.type) {
    case FrameType::kHelloAck: {
      v1::HelloAck ack;
      if (ack.ParseFromArray(frame.payload.data(), size)) {
        impl_->ack = std::move(ack);
      }
      impl_->hello_wake.cancel();
      return;
    }
    case FrameType::kHeartbeat: {
      v1::Heartbeat heartbeat;
      if (heartbeat.ParseFromArray(frame.payload.data(), size) && !heartbeat.ack()) {
        heartbeat.set_ack(true);
        (void)connection_->Send(FrameType::kHeartbeat, 0, CorrelationId{}, heartbeat);
      }
      return;
    }
    case FrameType::kResponse: {
      auto it = impl_->calls.find(frame.header.correlation_id);
      if (it == impl_->calls.end()) {
        return;  // a call this side cancelled; the frame was in flight
      }
      v1::Response response;
      if (!response.ParseFromArray(frame.payload.data(), size)) {
        it->second->End(absl::InternalError("the gateway sent a RESPONSE that does not parse"));
        impl_->calls.erase(it);
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
        impl_->calls.erase(it);
      }
      return;
    }
    case FrameType::kWindowUpdate: {
      auto it = impl_->calls.find(frame.header.correlation_id);
      v1::WindowUpdate update;
      if (it != impl_->calls.end() && update.ParseFromArray(frame.payload.data(), size)) {
        it->second->send_window.Grant(update.bytes());
      }
      return;
    }
    default:
      return;  // GOAWAY: the close follows
  }
}

void Channel::OnClosed(const absl::Status& reason) {
  impl_->closed = true;
  closed_reason_ = reason.ok() ? absl::UnavailableError("the channel was closed") : reason;
  for (auto& [id, call] : impl_->calls) {
    call->End(absl::UnavailableError(
        absl::StrCat("the connection to the gateway closed: ", closed_reason_.message())));
  }
  impl_->calls.clear();
  impl_->hello_wake.cancel();
}

void Channel::Close() { connection_->Close(absl::OkStatus()); }

absl::StatusOr<std::unique_ptr<ClientCall>> Channel::Open(const std::string& method,
                                                          const CallOptions& options,
                                                          std::optional<std::string> first,
                                                          bool close_send) {
  if (impl_->closed) {
    return absl::UnavailableError(
        absl::StrCat("the connection to the gateway is closed: ", closed_reason_.message()));
  }
  auto state = std::make_shared<ClientCall::State>(connection_->executor(), impl_->window());
  state->id = runtime::CorrelationIdFromCounter(impl_->next_id++);
  std::weak_ptr<Channel> weak = weak_from_this();
  state->responses.set_flow_control(impl_->window(), [weak, id = state->id](std::uint32_t bytes) {
    auto self = weak.lock();
    if (self == nullptr) {
      return;
    }
    v1::WindowUpdate update;
    update.set_bytes(bytes);
    (void)self->connection_->Send(FrameType::kWindowUpdate, 0, id, update);
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
                                                     impl_->window(), " bytes"));
  }
  if (absl::Status sent = connection_->Send(FrameType::kRequest, flags, state->id, request);
      !sent.ok()) {
    return sent;
  }
  state->send_closed = close_send;
  impl_->calls[state->id] = state;
  return std::unique_ptr<ClientCall>(new ClientCall(shared_from_this(), std::move(state)));
}

asio::awaitable<absl::StatusOr<std::string>> Channel::Call(std::string method, std::string request,
                                                           CallOptions options) {
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
  co_return channel_->connection_->Send(FrameType::kRequest, 0, state_->id, request);
}

absl::Status ClientCall::CloseSend() {
  if (state_->send_closed) {
    return absl::OkStatus();
  }
  state_->send_closed = true;
  if (state_->responses.ended()) {
    return absl::OkStatus();
  }
  return channel_->connection_->Send(FrameType::kRequest, runtime::kFlagFinal, state_->id,
                                     v1::Request());
}

asio::awaitable<absl::StatusOr<std::optional<std::string>>> ClientCall::Read() {
  co_return co_await state_->responses.Read();
}

void ClientCall::Cancel(const std::string& reason) {
  if (state_->responses.ended()) {
    return;
  }
  v1::Cancel cancel;
  cancel.set_code(static_cast<int>(absl::StatusCode::kCancelled));
  cancel.set_reason(reason);
  (void)channel_->connection_->Send(FrameType::kCancel, 0, state_->id, cancel);
  state_->End(absl::CancelledError(reason));
  channel_->impl_->calls.erase(state_->id);
}

}  // namespace stella::sdk
