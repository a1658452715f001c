// The per-call pieces of the service SDK shared by both ends: the inbox a call's messages arrive
// in, and the context a handler sees. Generated code uses these through ServiceHost and Channel.
#ifndef STELLA_SERVICE_SDK_CALL_H_
#define STELLA_SERVICE_SDK_CALL_H_

#include <algorithm>
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace stella::sdk {

// What a handler knows about the call it serves. It lives on the host's executor; a blocking
// handler on a pool thread (service_sdk/blocking.h) may read it too: cancelled() is safe from any
// thread, and cancel_reason() once cancelled() has returned true.
class CallContext {
 public:
  CallContext(std::string method, std::map<std::string, std::string> metadata, absl::Time deadline)
      : method_(std::move(method)), metadata_(std::move(metadata)), deadline_(deadline) {}
  CallContext(CallContext&& other) noexcept
      : method_(std::move(other.method_)),
        metadata_(std::move(other.metadata_)),
        deadline_(other.deadline_),
        cancel_reason_(std::move(other.cancel_reason_)),
        cancelled_(other.cancelled_.load(std::memory_order_acquire)) {}
  CallContext& operator=(CallContext&&) = delete;

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
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }
  const absl::Status& cancel_reason() const { return cancel_reason_; }
  // Called by the SDK, on the host's executor. The first reason wins.
  void Cancel(absl::Status reason) {
    if (!cancelled()) {
      cancel_reason_ = reason.ok() ? absl::CancelledError("cancelled") : std::move(reason);
      cancelled_.store(true, std::memory_order_release);
    }
  }

 private:
  std::string method_;
  std::map<std::string, std::string> metadata_;
  absl::Time deadline_;
  absl::Status cancel_reason_;
  std::atomic<bool> cancelled_{false};
};

// Messages of one direction of a call, queued as they arrive, read by one coroutine. Ends with a
// status: OK at a normal end of stream, or why the call failed. Single-threaded: it lives on its
// connection's executor.
//
// Flow control, receiving side: the bytes of each frame count as consumed when the reader takes
// its message; once half the stream window is consumed, `grant` is called with the amount so the
// owner can send a WINDOW_UPDATE to the sender.
class Inbox {
 public:
  explicit Inbox(const boost::asio::any_io_executor& executor)
      : wake_(executor, boost::asio::steady_timer::time_point::max()) {}

  // Enables WINDOW_UPDATE reporting for a stream whose window is `window` bytes.
  void set_flow_control(std::uint32_t window, std::function<void(std::uint32_t)> grant) {
    threshold_ = std::max<std::uint32_t>(1, window / 2);
    grant_ = std::move(grant);
  }

  // Queues a message that arrived in a frame with a `frame_bytes` payload.
  void Push(std::string message, std::uint32_t frame_bytes = 0) {
    messages_.push_back({std::move(message), frame_bytes});
    wake_.cancel();
  }
  // Accounts a frame that carried no message (e.g. a bare half-close): consumed at once.
  void Consumed(std::uint32_t frame_bytes) { Account(frame_bytes); }
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
  struct Message {
    std::string bytes;
    std::uint32_t frame_bytes;
  };
  void Account(std::uint32_t frame_bytes) {
    if (!grant_ || ended_) {
      return;
    }
    consumed_ += frame_bytes;
    if (consumed_ >= threshold_) {
      grant_(consumed_);
      consumed_ = 0;
    }
  }

  boost::asio::steady_timer wake_;
  std::deque<Message> messages_;
  bool ended_ = false;
  absl::Status status_;
  std::uint32_t threshold_ = 0;
  std::uint32_t consumed_ = 0;
  std::function<void(std::uint32_t)> grant_;
};

// Flow control, sending side: the bytes this side may still send on one stream. A sender waits
// in Acquire until a frame fits; WINDOW_UPDATE frames Grant more.
class SendWindow {
 public:
  SendWindow(const boost::asio::any_io_executor& executor, std::uint32_t initial)
      : wake_(executor, boost::asio::steady_timer::time_point::max()), available_(initial) {}

  void Grant(std::uint32_t bytes) {
    available_ += bytes;
    wake_.cancel();
  }
  // Ends every wait with `status` (the call is over).
  void Close(absl::Status status) {
    if (closed_.ok()) {
      closed_ = status.ok() ? absl::CancelledError("the call ended") : std::move(status);
    }
    wake_.cancel();
  }
  // Takes `bytes` if they fit now; false otherwise.
  bool TryAcquire(std::uint32_t bytes) {
    if (available_ < static_cast<std::int64_t>(bytes)) {
      return false;
    }
    available_ -= bytes;
    return true;
  }
  // Waits until `bytes` fit, then takes them; the close status if the call ends first.
  boost::asio::awaitable<absl::Status> Acquire(std::uint32_t bytes);

  std::int64_t available() const { return available_; }

 private:
  boost::asio::steady_timer wake_;
  std::int64_t available_;
  absl::Status closed_;
};

}  // namespace stella::sdk

#endif  // STELLA_SERVICE_SDK_CALL_H_
