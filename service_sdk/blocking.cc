#include "service_sdk/blocking.h"

#include <algorithm>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"

namespace stella::sdk {
namespace {

namespace asio = boost::asio;
using Result = absl::StatusOr<std::string>;

// Runs `work` on `pool` and completes with its result on the awaiting coroutine's executor.
template <typename Token>
auto RunOnPool(asio::thread_pool::executor_type pool, std::function<Result()> work, Token&& token) {
  return asio::async_initiate<Token, void(Result)>(
      [](auto handler, asio::thread_pool::executor_type on, std::function<Result()> job) {
        asio::post(on, [handler = std::move(handler), job = std::move(job)]() mutable {
          Result result = job();
          auto home = asio::get_associated_executor(handler);
          asio::dispatch(home,
                         [handler = std::move(handler), result = std::move(result)]() mutable {
                           std::move(handler)(std::move(result));
                         });
        });
      },
      token, pool, std::move(work));
}

// The work for the pool: `function` on the request, with exceptions turned into INTERNAL.
// (Built outside the coroutine: the same lambda built inside ServeUnary freed a bad pointer
// under GCC 12.)
std::function<Result()> Job(BlockingPool::UnaryFunction function, const CallContext* context,
                            std::string request) {
  return [function = std::move(function), context, request = std::move(request)]() -> Result {
    try {
      return function(*context, request);
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat("the handler of ", context->method(), " threw an exception: ", e.what()));
    } catch (...) {
      return absl::InternalError(
          absl::StrCat("the handler of ", context->method(), " threw a non-standard exception"));
    }
  };
}

// The body of every blocking unary call. Parameters are copies: they live in the coroutine frame.
asio::awaitable<absl::Status> ServeUnary(asio::thread_pool::executor_type pool,
                                         BlockingPool::UnaryFunction function, ServerCall& call) {
  absl::StatusOr<std::optional<std::string>> request = co_await call.Read();
  if (!request.ok()) {
    co_return request.status();
  }
  if (!request->has_value()) {
    co_return absl::InvalidArgumentError(
        absl::StrCat(call.context().method(), " is unary, but the call sent no request message"));
  }
  Result result = co_await RunOnPool(
      pool, Job(std::move(function), &call.context(), std::move(**request)), asio::use_awaitable);
  if (!result.ok()) {
    co_return result.status();
  }
  call.SetResponse(*std::move(result));
  co_return absl::OkStatus();
}

}  // namespace

struct BlockingPool::Impl {
  explicit Impl(std::size_t threads) : pool(std::max<std::size_t>(threads, 1)) {}
  asio::thread_pool pool;
};

BlockingPool::BlockingPool(std::size_t threads) : impl_(std::make_shared<Impl>(threads)) {}

BlockingPool::~BlockingPool() { impl_->pool.join(); }

Handler BlockingPool::Unary(UnaryFunction function) {
  // Not a coroutine itself: it returns the coroutine ServeUnary, which copies what it needs.
  return [pool = impl_->pool.get_executor(), function = std::move(function)](ServerCall& call) {
    return ServeUnary(pool, function, call);
  };
}

}  // namespace stella::sdk
