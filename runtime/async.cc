#include "runtime/async.h"

#include <atomic>
#include <stdexcept>

#include "spdlog/spdlog.h"

namespace stella::runtime {
namespace {

std::atomic<std::uint64_t> g_coroutine_failures{0};

}  // namespace

void LogCoroutineFailure::operator()(const std::exception_ptr& error) const {
  if (!error) {
    return;
  }
  g_coroutine_failures.fetch_add(1, std::memory_order_relaxed);
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    spdlog::error("{} ended with an exception: {}", what_, e.what());
  } catch (...) {
    spdlog::error("{} ended with an exception that is not a std::exception", what_);
  }
}

std::uint64_t CoroutineFailureCount() {
  return g_coroutine_failures.load(std::memory_order_relaxed);
}

}  // namespace stella::runtime
