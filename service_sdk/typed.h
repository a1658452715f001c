// The typed layer under the code protoc-gen-stella generates: protobuf messages over the byte-level
// ServerCall and ClientCall. Generated code calls only what is in this header; applications
// mostly meet ServerReader, ServerWriter and ClientStream through generated signatures.
#ifndef STELLA_SERVICE_SDK_TYPED_H_
#define STELLA_SERVICE_SDK_TYPED_H_

#include <boost/asio/awaitable.hpp>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "service_sdk/channel.h"
#include "service_sdk/service_host.h"

namespace stella::sdk {

// Parses `bytes` as a T; INVALID_ARGUMENT naming `what` and the type if it does not parse.
template <typename T>
absl::StatusOr<T> ParseMessage(const std::string& bytes, absl::string_view what) {
  T message;
  if (!message.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not a valid ", std::string(T::descriptor()->full_name())));
  }
  return message;
}

// --- Server side -------------------------------------------------------------------------------

// The request messages of a client-streaming or bidirectional call, as its handler reads them.
template <typename T>
class ServerReader {
 public:
  explicit ServerReader(ServerCall& call) : call_(call) {}
  // The next message; std::nullopt once the caller ended its stream; the call's status if it
  // was cancelled; INVALID_ARGUMENT for a message that does not parse.
  boost::asio::awaitable<absl::StatusOr<std::optional<T>>> Read() {
    absl::StatusOr<std::optional<std::string>> next = co_await call_.Read();
    if (!next.ok()) {
      co_return next.status();
    }
    if (!next->has_value()) {
      co_return std::optional<T>();
    }
    absl::StatusOr<T> message = ParseMessage<T>(**next, "a request message");
    if (!message.ok()) {
      co_return message.status();
    }
    co_return std::optional<T>(*std::move(message));
  }

 private:
  ServerCall& call_;
};

// The response stream of a server-streaming or bidirectional call.
template <typename T>
class ServerWriter {
 public:
  explicit ServerWriter(ServerCall& call) : call_(call) {}
  // Sends one message, waiting while the caller reads slowly (flow control). The call's status
  // if it has ended (e.g. cancelled): stop writing then.
  boost::asio::awaitable<absl::Status> Write(const T& message) {
    return call_.Write(message.SerializeAsString());
  }

 private:
  ServerCall& call_;
};

// The coroutines that adapt a generated handler method to the byte-level Handler. `handler` and
// `method` are copied into the coroutine frame; the handler object must outlive the host.
template <typename H, typename Req, typename Resp>
boost::asio::awaitable<absl::Status> ServeUnary(
    H* handler, boost::asio::awaitable<absl::StatusOr<Resp>> (H::*method)(CallContext&, const Req&),
    ServerCall& call) {
  absl::StatusOr<std::optional<std::string>> bytes = co_await call.Read();
  if (!bytes.ok()) {
    co_return bytes.status();
  }
  absl::StatusOr<Req> request = ParseMessage<Req>(bytes->value_or(""), "the request");
  if (!request.ok()) {
    co_return request.status();
  }
  absl::StatusOr<Resp> response = co_await (handler->*method)(call.context(), *request);
  if (!response.ok()) {
    co_return response.status();
  }
  call.SetResponse(response->SerializeAsString());
  co_return absl::OkStatus();
}

template <typename H, typename Req, typename Resp>
boost::asio::awaitable<absl::Status> ServeServerStreaming(
    H* handler,
    boost::asio::awaitable<absl::Status> (H::*method)(CallContext&, const Req&,
                                                      ServerWriter<Resp>&),
    ServerCall& call) {
  absl::StatusOr<std::optional<std::string>> bytes = co_await call.Read();
  if (!bytes.ok()) {
    co_return bytes.status();
  }
  absl::StatusOr<Req> request = ParseMessage<Req>(bytes->value_or(""), "the request");
  if (!request.ok()) {
    co_return request.status();
  }
  ServerWriter<Resp> writer(call);
  co_return co_await (handler->*method)(call.context(), *request, writer);
}

template <typename H, typename Req, typename Resp>
boost::asio::awaitable<absl::Status> ServeClientStreaming(
    H* handler,
    boost::asio::awaitable<absl::StatusOr<Resp>> (H::*method)(CallContext&, ServerReader<Req>&),
    ServerCall& call) {
  ServerReader<Req> reader(call);
  absl::StatusOr<Resp> response = co_await (handler->*method)(call.context(), reader);
  if (!response.ok()) {
    co_return response.status();
  }
  call.SetResponse(response->SerializeAsString());
  co_return absl::OkStatus();
}

template <typename H, typename Req, typename Resp>
boost::asio::awaitable<absl::Status> ServeBidiStreaming(
    H* handler,
    boost::asio::awaitable<absl::Status> (H::*method)(CallContext&, ServerReader<Req>&,
                                                      ServerWriter<Resp>&),
    ServerCall& call) {
  ServerReader<Req> reader(call);
  ServerWriter<Resp> writer(call);
  co_return co_await (handler->*method)(call.context(), reader, writer);
}

// A Handler for ServiceHost::Register that runs `method` of `handler` (one of the Serve*
// functions above picks the call kind). Not a coroutine itself: the returned one copies its
// arguments.
template <typename H, typename Method, typename Serve>
Handler BindHandler(H* handler, Method method, Serve serve) {
  return [handler, method, serve](ServerCall& call) { return serve(handler, method, call); };
}

// --- Client side -------------------------------------------------------------------------------

// A streaming call in progress, typed. Server streaming: Read until std::nullopt. Client
// streaming: Write each message, then Finish. Bidirectional: Write and Read freely, CloseSend
// when done writing.
template <typename Req, typename Resp>
class ClientStream {
 public:
  explicit ClientStream(std::unique_ptr<ClientCall> call) : call_(std::move(call)) {}

  boost::asio::awaitable<absl::Status> Write(const Req& message) {
    return call_->Write(message.SerializeAsString());
  }
  absl::Status CloseSend() { return call_->CloseSend(); }
  // The next response; std::nullopt at the successful end of the call; the call's error status
  // otherwise.
  boost::asio::awaitable<absl::StatusOr<std::optional<Resp>>> Read() {
    absl::StatusOr<std::optional<std::string>> next = co_await call_->Read();
    if (!next.ok()) {
      co_return next.status();
    }
    if (!next->has_value()) {
      co_return std::optional<Resp>();
    }
    absl::StatusOr<Resp> message = ParseMessage<Resp>(**next, "a response message");
    if (!message.ok()) {
      co_return message.status();
    }
    co_return std::optional<Resp>(*std::move(message));
  }
  // Client streaming: ends the request stream and waits for the single response.
  boost::asio::awaitable<absl::StatusOr<Resp>> Finish() {
    if (absl::Status closed = CloseSend(); !closed.ok()) {
      co_return closed;
    }
    absl::StatusOr<std::optional<Resp>> response = co_await Read();
    if (!response.ok()) {
      co_return response.status();
    }
    if (!response->has_value()) {
      co_return absl::InternalError("the call ended without its response message");
    }
    co_return **std::move(response);
  }
  void Cancel(const std::string& reason) { call_->Cancel(reason); }

 private:
  std::unique_ptr<ClientCall> call_;
};

// What a generated client holds: the channel. Generated code reaches it as
// `::stella::sdk::ClientBase::channel()`, which no generated method name can hide.
class ClientBase {
 public:
  explicit ClientBase(std::shared_ptr<Channel> channel) : channel_(std::move(channel)) {}
  Channel& channel() const { return *channel_; }

 private:
  std::shared_ptr<Channel> channel_;
};

// A unary call: `request` is already serialized, so the caller's message may go away at once.
template <typename Resp>
boost::asio::awaitable<absl::StatusOr<Resp>> CallUnary(Channel& channel, std::string method,
                                                       std::string request, CallOptions options) {
  absl::StatusOr<std::string> response =
      co_await channel.Call(std::move(method), std::move(request), std::move(options));
  if (!response.ok()) {
    co_return response.status();
  }
  co_return ParseMessage<Resp>(*response, "the response");
}

// Starts a streaming call; `first` (serialized) goes with the opening frame when given.
template <typename Req, typename Resp>
absl::StatusOr<ClientStream<Req, Resp>> OpenStream(Channel& channel, const std::string& method,
                                                   std::optional<std::string> first,
                                                   bool close_send, const CallOptions& options) {
  absl::StatusOr<std::unique_ptr<ClientCall>> call =
      channel.Open(method, options, std::move(first), close_send);
  if (!call.ok()) {
    return call.status();
  }
  return ClientStream<Req, Resp>(*std::move(call));
}

// A unary call from code that is not a coroutine: runs it on the channel's executor and waits.
// The channel's io_context must be running on another thread; called from that thread it
// returns FAILED_PRECONDITION instead of deadlocking.
absl::StatusOr<std::string> CallBlocking(Channel& channel, std::string method, std::string request,
                                         CallOptions options);

template <typename Resp>
absl::StatusOr<Resp> CallUnaryBlocking(Channel& channel, std::string method, std::string request,
                                       CallOptions options) {
  absl::StatusOr<std::string> response =
      CallBlocking(channel, std::move(method), std::move(request), std::move(options));
  if (!response.ok()) {
    return response.status();
  }
  return ParseMessage<Resp>(*response, "the response");
}

}  // namespace stella::sdk

#endif  // STELLA_SERVICE_SDK_TYPED_H_
