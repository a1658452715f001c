#include "gateway/routing_table.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace stella::gateway {
namespace {

namespace v1 = ::stella::router::v1;

// "greeter.v1.Greeter/SayHello" → "greeter.v1.Greeter"; empty if not of that form.
absl::string_view ServiceOf(absl::string_view method) {
  const std::size_t slash = method.find('/');
  if (slash == absl::string_view::npos || slash == 0 || slash + 1 == method.size() ||
      method.find('/', slash + 1) != absl::string_view::npos) {
    return "";
  }
  return method.substr(0, slash);
}

bool SameSchema(const v1::Endpoint& a, const v1::Endpoint& b) {
  return a.request_type() == b.request_type() && a.response_type() == b.response_type() &&
         a.kind() == b.kind();
}

}  // namespace

RoutingTable::RoutingTable() : current_(std::make_shared<RoutingSnapshot>()) {}

absl::Status RoutingTable::Add(std::shared_ptr<Instance> instance) {
  for (const v1::Endpoint& endpoint : instance->endpoints) {
    if (ServiceOf(endpoint.method()).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("endpoint \"", endpoint.method(), "\" of service \"", instance->service_name,
                       "\" is not a full method name \"package.Service/Method\""));
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& existing : current_->instances) {
    if (existing->connection_id == instance->connection_id) {
      return absl::AlreadyExistsError(
          absl::StrCat("connection ", instance->connection_id, " is already registered"));
    }
  }
  for (const v1::Endpoint& endpoint : instance->endpoints) {
    auto it = current_->methods.find(endpoint.method());
    if (it != current_->methods.end() &&
        it->second.instances.front()->service_name != instance->service_name) {
      // Identity binding checks service names; this keeps one service (or a stolen certificate
      // of one) from taking over the methods another service is serving.
      return absl::PermissionDeniedError(
          absl::StrCat("method ", endpoint.method(), " is served by service \"",
                       it->second.instances.front()->service_name, "\"; service \"",
                       instance->service_name, "\" may not register it too"));
    }
    if (it != current_->methods.end() && !SameSchema(it->second.endpoint, endpoint)) {
      const v1::Endpoint& known = it->second.endpoint;
      return absl::InvalidArgumentError(absl::StrCat(
          "method ", endpoint.method(), " is already registered as ", known.request_type(), " -> ",
          known.response_type(), " (", v1::CallKind_Name(known.kind()), "), but instance \"",
          instance->instance_id, "\" of \"", instance->service_name, "\" declares ",
          endpoint.request_type(), " -> ", endpoint.response_type(), " (",
          v1::CallKind_Name(endpoint.kind()), ")"));
    }
  }
  auto next = std::make_shared<RoutingSnapshot>(*current_);
  for (const v1::Endpoint& endpoint : instance->endpoints) {
    MethodRoute& route = next->methods[endpoint.method()];
    if (route.instances.empty()) {
      route.endpoint = endpoint;
    }
    route.instances.push_back(instance);
  }
  next->instances.push_back(std::move(instance));
  Publish(std::move(next));
  return absl::OkStatus();
}

bool RoutingTable::Remove(std::uint64_t connection_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = std::find_if(
      current_->instances.begin(), current_->instances.end(),
      [connection_id](const auto& instance) { return instance->connection_id == connection_id; });
  if (found == current_->instances.end()) {
    return false;
  }
  auto next = std::make_shared<RoutingSnapshot>(*current_);
  auto is_gone = [connection_id](const std::shared_ptr<Instance>& instance) {
    return instance->connection_id == connection_id;
  };
  std::erase_if(next->instances, is_gone);
  for (auto it = next->methods.begin(); it != next->methods.end();) {
    std::erase_if(it->second.instances, is_gone);
    if (it->second.instances.empty()) {
      next->methods.erase(it++);  // no instance left: the method is unknown again
    } else {
      ++it;
    }
  }
  Publish(std::move(next));
  return true;
}

void RoutingTable::Publish(std::shared_ptr<RoutingSnapshot> next) {
  next->version = version_.load(std::memory_order_relaxed) + 1;
  current_ = std::move(next);
  version_.store(current_->version, std::memory_order_release);
}

std::shared_ptr<const RoutingSnapshot> RoutingTable::Snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return current_;
}

const RoutingSnapshot& RoutingReader::Get() {
  const std::uint64_t version = table_.version();
  if (version != seen_ || snapshot_ == nullptr) {
    snapshot_ = table_.Snapshot();
    seen_ = snapshot_->version;
  }
  return *snapshot_;
}

absl::StatusOr<std::shared_ptr<Instance>> RoutingReader::Pick(absl::string_view method,
                                                              absl::string_view caller_region) {
  const RoutingSnapshot& snapshot = Get();
  auto it = snapshot.methods.find(method);
  if (it == snapshot.methods.end()) {
    return absl::NotFoundError(absl::StrCat("no service registers the method ", method));
  }
  const std::vector<std::shared_ptr<Instance>>& all = it->second.instances;
  scratch_.clear();
  bool any_in_region = false;
  for (const auto& instance : all) {
    if (instance->draining.load(std::memory_order_relaxed) ||
        !instance->healthy.load(std::memory_order_relaxed)) {
      continue;
    }
    const bool in_region = !caller_region.empty() && instance->region == caller_region;
    if (in_region && !any_in_region) {
      scratch_.clear();  // from now on only same-region instances count
      any_in_region = true;
    }
    if (in_region || !any_in_region) {
      scratch_.push_back(&instance);
    }
  }
  if (scratch_.empty()) {
    return absl::UnavailableError(absl::StrCat("method ", method, " is registered by ", all.size(),
                                               " instance(s), but none is live (all are draining "
                                               "or missed their heartbeats)"));
  }
  if (scratch_.size() == 1) {
    return *scratch_.front();
  }
  std::uniform_int_distribution<std::size_t> dist(0, scratch_.size() - 1);
  const std::size_t a = dist(rng_);
  std::size_t b = dist(rng_);
  if (b == a) {
    b = (a + 1) % scratch_.size();
  }
  const std::shared_ptr<Instance>& first = *scratch_[a];
  const std::shared_ptr<Instance>& second = *scratch_[b];
  return first->outstanding.load(std::memory_order_relaxed) <=
                 second->outstanding.load(std::memory_order_relaxed)
             ? first
             : second;
}

}  // namespace stella::gateway
