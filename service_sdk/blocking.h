// Blocking handlers: code that must block (a synchronous database driver, a CPU-heavy step)
// runs on a worker pool instead of the host's connection thread, so one slow handler never
// stalls the other calls on the connection.
#ifndef STELLA_SERVICE_SDK_BLOCKING_H_
#define STELLA_SERVICE_SDK_BLOCKING_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "service_sdk/call.h"
#include "service_sdk/service_host.h"

namespace stella::sdk {

class BlockingPool {
 public:
  // A unary handler that blocks: the request message in, the response message or an error out.
  // It runs on a pool thread; `context` is safe to read there (cancelled() included), and it
  // should return early once the call is cancelled.
  using UnaryFunction =
      std::function<absl::StatusOr<std::string>(const CallContext& context, const std::string&)>;

  // Starts `threads` worker threads (at least one).
  explicit BlockingPool(std::size_t threads);
  // Waits for running work to finish, then joins the threads. Destroy it after the ServiceHost
  // has shut down.
  ~BlockingPool();
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // A Handler to Register for a unary method: it reads the request, runs `function` on a pool
  // thread, and sends its result. An exception `function` throws becomes INTERNAL.
  Handler Unary(UnaryFunction function);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace stella::sdk

#endif  // STELLA_SERVICE_SDK_BLOCKING_H_
