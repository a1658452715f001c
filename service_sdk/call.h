// The per-call pieces of the service SDK shared by both ends: the inbox a call's messages arrive
// in, and the context a handler sees. Generated code uses these through ServiceHost and Channel.
#ifndef STELLA_SERVICE_SDK_CALL_H_
#define STELLA_SERVICE_SDK_CALL_H_

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace stella::sdk {

// What a handler knows about the call it serves.
class CallContext {
 public:
  CallContext(std::string method, std::map<std::string, std::string> metadata, absl::Time deadline)
      : method_(std::move(method)), metadata_(std::move(metadata)), deadline_(deadline) {}

  // "package.Service/Method".
  const std::string& method() const { return method_; }
  // The caller's metadata (e.g. "traceparent"), plus the gateway's "stella-caller-identity".
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The caller's certificate identity as the gateway saw it (callers cannot forge it).
  std::string caller_identity() const;
  // When the caller stops waiting; absl::InfiniteFuture() without a deadline.
  absl::Time deadline() const { return deadline_; }

  // Set when the call is cancelled: by the caller, its deadline, or a lost connection. A handler
  // should stop and return; what it returns then is discarded.
  bool cancelled() const { return !cancel_reason_.ok(); }
  const absl::Status& cancel_reason() const { return cancel_reason_; }
  void Cancel(absl::Status reason) {
    if (cancel_reason_.ok()) {
      cancel_reason_ = std::move(reason);
    }
  }

 private:
  std::string method_;
  std::map<std::string, std::string> metadata_;
  absl::Time deadline_;
  absl::Status cancel_reason_;
};

// Messages of one direction of a call, queued as they arrive, read by one coroutine. Ends with a
// status: OK at a normal end of stream, or why the call failed. Single-threaded: it lives on its
// connection's executor.
class Inbox {
 public:
  explicit Inbox(const boost::asio::any_io_executor& executor)
      : wake_(executor, boost::asio::steady_timer::time_point::max()) {}

  void Push(std::string message) {
    messages_.push_back(std::move(message));
    wake_.cancel();
  }
  // Ends the stream (the first end wins).
  void End(absl::Status status) {
    if (!ended_) {
      ended_ = true;
      status_ = std::move(status);
    }
    wake_.cancel();
  }
  bool ended() const { return ended_; }

  // The next message; std::nullopt once the stream ended with OK and is drained; the status if
  // it ended with an error (queued messages are still delivered first).
  boost::asio::awaitable<absl::StatusOr<std::optional<std::string>>> Read();

 private:
  boost::asio::steady_timer wake_;
  std::deque<std::string> messages_;
  bool ended_ = false;
  absl::Status status_;
};

}  // namespace stella::sdk

#endif  // STELLA_SERVICE_SDK_CALL_H_
