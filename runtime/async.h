// Small helpers for Asio coroutines shared by the gateway and the SDK. Asio-free on purpose: the
// completion handler below is a plain callable.
#ifndef STELLA_RUNTIME_ASYNC_H_
#define STELLA_RUNTIME_ASYNC_H_

#include <cstdint>
#include <exception>
#include <string>

namespace stella::runtime {

// A co_spawn completion handler that never swallows an exception silently: it logs which
// coroutine (`what`, e.g. "connection reader 127.0.0.1:5000") died and of what, and counts it.
// Use it instead of asio::detached.
class LogCoroutineFailure {
 public:
  explicit LogCoroutineFailure(std::string what) : what_(std::move(what)) {}
  void operator()(const std::exception_ptr& error) const;

 private:
  std::string what_;
};

// How many spawned coroutines have ended with an exception in this process (a metric; should
// stay zero).
std::uint64_t CoroutineFailureCount();

}  // namespace stella::runtime

#endif  // STELLA_RUNTIME_ASYNC_H_
