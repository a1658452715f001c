// Channel: a caller's connection to a gateway. Methods are named by string and messages are
// bytes here; the typed stubs from protoc-gen-stella sit on top.
#ifndef STELLA_SERVICE_SDK_CHANNEL_H_
#define STELLA_SERVICE_SDK_CHANNEL_H_

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/framed_connection.h"
#include "service_sdk/call.h"
#include "service_sdk/gateway_address.h"

namespace stella::sdk {

struct ChannelOptions {
  // The gateways' caller listeners, in order of preference. The channel connects to the first
  // that accepts; when that connection is lost, or its gateway starts draining, new calls move
  // to the next one that accepts.
  std::vector<GatewayAddress> gateways;
  // Where each connection takes its TLS snapshot from (a CertificateProvider's Current(), so a
  // rotated certificate is used from the next connection on).
  std::function<std::shared_ptr<const runtime::tls::TlsContext>()> tls;
  runtime::ConnectionOptions connection;
  // Sent in HELLO: a name for the gateway's logs and the region to prefer services in.
  std::string name;
  std::string region;
  // Backoff between rounds over the gateway list while none accepts (full jitter, doubling).
  absl::Duration initial_reconnect_delay = absl::Milliseconds(100);
  absl::Duration max_reconnect_delay = absl::Seconds(10);
};

struct CallOptions {
  // How long the caller waits; zero means the method's (or the gateway's) default.
  absl::Duration timeout = absl::ZeroDuration();
  std::map<std::string, std::string> metadata;
  // While no gateway connection is up: false (gRPC's fail-fast default) fails Call at once with
  // UNAVAILABLE; true makes Call wait for the channel to reconnect, within `timeout` (or the
  // connection's handshake timeout when `timeout` is zero).
  bool wait_for_ready = false;
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

  // The call's state, defined in channel.cc (opaque here).
  struct State;

 private:
  friend class Channel;
  ClientCall(std::shared_ptr<Channel> channel, std::shared_ptr<State> state)
      : channel_(std::move(channel)), state_(std::move(state)) {}

  std::shared_ptr<Channel> channel_;
  std::shared_ptr<State> state_;
};

class Channel : public std::enable_shared_from_this<Channel> {
 public:
  // Connects to the first gateway of the list that accepts (HELLO as a caller, HELLO_ACK back),
  // trying each once. Without one: the error of each, e.g. UNAVAILABLE, UNAUTHENTICATED with the
  // readable reason, or the gateway's refusal. From then on the channel reconnects by itself.
  static boost::asio::awaitable<absl::StatusOr<std::shared_ptr<Channel>>> Connect(
      boost::asio::any_io_executor executor, ChannelOptions options);

  // Closes the connections.
  ~Channel();

  // A unary call: one request, one response.
  boost::asio::awaitable<absl::StatusOr<std::string>> Call(std::string method, std::string request,
                                                           CallOptions options = {});

  // Starts a streaming call on the current connection. `first` is sent with the opening frame
  // if given; `close_send` half-closes right away (server streaming). UNAVAILABLE while no
  // connection is up (see WaitForReady).
  absl::StatusOr<std::unique_ptr<ClientCall>> Open(const std::string& method,
                                                   const CallOptions& options,
                                                   std::optional<std::string> first,
                                                   bool close_send);

  // Waits until a gateway connection is up, at most `timeout`: OK, or UNAVAILABLE with the last
  // connection error.
  boost::asio::awaitable<absl::Status> WaitForReady(absl::Duration timeout);

  // Closes every connection and stops reconnecting; calls in progress end with UNAVAILABLE.
  void Close();
  // True while a gateway connection takes new calls.
  bool connected() const;
  // "host:port" of the gateway new calls go to; empty while not connected.
  std::string gateway() const;
  // Why the last connection ended or the last attempt failed; OK if none has.
  absl::Status last_error() const;
  // The executor the channel lives on; calls must be made there.
  boost::asio::any_io_executor executor() const;
  // True on the thread that runs the channel's executor (as far as the channel has seen).
  bool running_in_this_thread() const;

  struct Impl;

 private:
  explicit Channel(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  absl::Status NotConnected() const;
  friend class ClientCall;

  std::shared_ptr<Impl> impl_;  // shared with the reconnect loop, which holds it weakly
};

}  // namespace stella::sdk

#endif  // STELLA_SERVICE_SDK_CHANNEL_H_
