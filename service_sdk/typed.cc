#include "service_sdk/typed.h"

#include <boost/asio/co_spawn.hpp>
#include <exception>
#include <future>

namespace stella::sdk {

absl::StatusOr<std::string> CallBlocking(Channel& channel, std::string method, std::string request,
                                         CallOptions options) {
  if (channel.running_in_this_thread()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a blocking call to ", method,
        " from the channel's own io thread would deadlock; co_await the coroutine version"));
  }
  std::promise<absl::StatusOr<std::string>> promise;
  std::future<absl::StatusOr<std::string>> answer = promise.get_future();
  boost::asio::co_spawn(
      channel.executor(), channel.Call(std::move(method), std::move(request), std::move(options)),
      [&promise](const std::exception_ptr& error, absl::StatusOr<std::string> response) {
        if (error) {
          promise.set_value(absl::InternalError("the call's coroutine threw an exception"));
        } else {
          promise.set_value(std::move(response));
        }
      });
  return answer.get();
}

}  // namespace stella::sdk
