// Running Asio coroutines to completion from a test, on one io_context, with a time bound: the
// test thread pumps the loop until the result is in (no sleeps).
#ifndef STELLA_TESTS_SUPPORT_LOOPBACK_H_
#define STELLA_TESTS_SUPPORT_LOOPBACK_H_

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <optional>
#include <stdexcept>
#include <utility>

namespace stella::testing {

// A TCP port on 127.0.0.1 that was free a moment ago, for a process that must be told its port
// up front (a config file) or be restarted on the same one.
inline std::uint16_t FreeLoopbackPort() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

// An io_context kept alive by a work guard, so that pumping it never stops it for lack of work.
class TestLoop {
 public:
  TestLoop() : work_(boost::asio::make_work_guard(io_)) {}

  boost::asio::io_context& io() { return io_; }
  boost::asio::any_io_executor executor() { return io_.get_executor(); }

  // Pumps the loop until `done()` or `timeout`; returns done().
  bool PumpUntil(const std::function<bool()>& done,
                 std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      io_.run_one_for(std::chrono::milliseconds(20));
    }
    return done();
  }

  // Runs what is ready without blocking.
  void Poll() { io_.poll(); }

  // Starts `task` on the loop; `*out` receives its result (or the test fails on an exception).
  template <typename T>
  void Spawn(boost::asio::awaitable<T> task, std::optional<T>* out) {
    boost::asio::co_spawn(io_, std::move(task), [out](const std::exception_ptr& error, T value) {
      if (error) {
        std::rethrow_exception(error);
      }
      out->emplace(std::move(value));
    });
  }

  // Runs `task` to completion (at most `timeout`) and returns its result; throws on timeout.
  template <typename T>
  T Run(boost::asio::awaitable<T> task,
        std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::optional<T> out;
    Spawn(std::move(task), &out);
    if (!PumpUntil([&] { return out.has_value(); }, timeout)) {
      throw std::runtime_error("coroutine did not finish in time");
    }
    return *std::move(out);
  }

  // Runs `probe` on a thread of its own (blocking sockets, a subprocess) while this loop turns,
  // and returns its result. Throws if it takes longer than `timeout`.
  template <typename T>
  T RunOffLoop(std::function<T()> probe,
               std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    std::future<T> result = std::async(std::launch::async, std::move(probe));
    if (!PumpUntil(
            [&] { return result.wait_for(std::chrono::seconds(0)) == std::future_status::ready; },
            timeout)) {
      throw std::runtime_error("off-loop probe did not finish in time");
    }
    return result.get();
  }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
};

}  // namespace stella::testing

#endif  // STELLA_TESTS_SUPPORT_LOOPBACK_H_
