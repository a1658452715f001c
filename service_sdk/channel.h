// Channel: a caller's connection to a gateway. Methods are named by string and messages are
// bytes here; the typed stubs from protoc-gen-stella sit on top.
#ifndef STELLA_SERVICE_SDK_CHANNEL_H_
#define STELLA_SERVICE_SDK_CHANNEL_H_

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/framed_connection.h"
#include "service_sdk/call.h"

namespace stella::sdk {

struct ChannelOptions {
  std::string host;
  std::uint16_t port = 9502;
  // The caller's TLS snapshot (its client certificate and the gateway's CA).
  std::shared_ptr<const runtime::tls::TlsContext> tls;
  runtime::ConnectionOptions connection;
  // Sent in HELLO: a name for the gateway's logs and the region to prefer services in.
  std::string name;
  std::string region;
};

struct CallOptions {
  // How long the caller waits; zero means the method's (or the gateway's) default.
  absl::Duration timeout = absl::ZeroDuration();
  std::map<std::string, std::string> metadata;
};

class Channel;

// One call in progress, seen from the caller: request messages go out with Write, responses
// come in with Read. Lives on the channel's executor.
class ClientCall {
 public:
  ~ClientCall();
  ClientCall(const ClientCall&) = delete;
  ClientCall& operator=(const ClientCall&) = delete;

  // Sends a request message, waiting while the stream's flow-control window is full (the
  // service reads slowly). FAILED_PRECONDITION after CloseSend; the call's status once it ended.
  boost::asio::awaitable<absl::Status> Write(std::string message);
  // Ends the request stream (half-close).
  absl::Status CloseSend();
  // The next response message; std::nullopt at the end of a successful call; the call's error
  // status otherwise (e.g. NOT_FOUND, DEADLINE_EXCEEDED, UNAVAILABLE).
  boost::asio::awaitable<absl::StatusOr<std::optional<std::string>>> Read();
  // Gives up on the call: the gateway cancels it at the service.
  void Cancel(const std::string& reason);

 private:
  friend class Channel;
  struct State;
  ClientCall(std::shared_ptr<Channel> channel, std::shared_ptr<State> state)
      : channel_(std::move(channel)), state_(std::move(state)) {}

  std::shared_ptr<Channel> channel_;
  std::shared_ptr<State> state_;
};

class Channel : public std::enable_shared_from_this<Channel> {
 public:
  // Connects, sends HELLO as a caller and waits for HELLO_ACK. Errors from the connection
  // (UNAVAILABLE, UNAUTHENTICATED with the readable reason, ...) or the gateway's refusal.
  static boost::asio::awaitable<absl::StatusOr<std::shared_ptr<Channel>>> Connect(
      boost::asio::any_io_executor executor, ChannelOptions options);

  // Closes the connection.
  ~Channel();

  // A unary call: one request, one response.
  boost::asio::awaitable<absl::StatusOr<std::string>> Call(std::string method, std::string request,
                                                           CallOptions options = {});

  // Starts a streaming call. `first` is sent with the opening frame if given; `close_send`
  // half-closes right away (server streaming).
  absl::StatusOr<std::unique_ptr<ClientCall>> Open(const std::string& method,
                                                   const CallOptions& options,
                                                   std::optional<std::string> first,
                                                   bool close_send);

  // Closes the connection; calls in progress end with UNAVAILABLE.
  void Close();
  // Why the connection closed, once it has; OK while open.
  absl::Status closed_reason() const { return closed_reason_; }

  struct Impl;

 private:
  explicit Channel(std::shared_ptr<runtime::FramedConnection> connection);
  void OnFrame(const runtime::FrameView& frame);
  void OnClosed(const absl::Status& reason);
  friend class ClientCall;

  std::shared_ptr<runtime::FramedConnection> connection_;
  std::unique_ptr<Impl> impl_;
  absl::Status closed_reason_;
};

}  // namespace stella::sdk

#endif  // STELLA_SERVICE_SDK_CHANNEL_H_
