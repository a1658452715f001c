#include "runtime/keepalive.h"

#include <boost/asio/steady_timer.hpp>

#include "absl/strings/str_cat.h"
#include "runtime/framed_connection.h"
#include "stella/router/v1/frames.pb.h"

namespace stella::runtime {
namespace {

namespace v1 = ::stella::router::v1;

}  // namespace

struct Keepalive::Impl {
  Impl(const std::shared_ptr<FramedConnection>& connection_in, std::string peer_in)
      : connection(connection_in),
        timer(connection_in->executor()),
        peer(std::move(peer_in)),
        last_received(absl::Now()) {}

  std::weak_ptr<FramedConnection> connection;
  boost::asio::steady_timer timer;
  absl::Duration interval = absl::ZeroDuration();
  std::string peer;
  absl::Time last_received;
  std::uint64_t sequence = 0;
  bool stopped = false;
};

namespace {

void Arm(const std::shared_ptr<Keepalive::Impl>& impl, absl::Duration after);

void Tick(const std::shared_ptr<Keepalive::Impl>& impl) {
  auto connection = impl->connection.lock();
  if (impl->stopped || connection == nullptr) {
    return;
  }
  const absl::Duration silent = absl::Now() - impl->last_received;
  if (silent > kMissedHeartbeats * impl->interval) {
    connection->Abort(absl::UnavailableError(
        absl::StrCat(impl->peer, " sent nothing for ", absl::FormatDuration(silent), " (",
                     kMissedHeartbeats, " heartbeat intervals)")));
    return;
  }
  v1::Heartbeat heartbeat;
  heartbeat.set_sequence(++impl->sequence);
  heartbeat.set_send_time_unix_us(absl::ToUnixMicros(absl::Now()));
  (void)connection->Send(FrameType::kHeartbeat, 0, CorrelationId{}, heartbeat);
  Arm(impl, NextHeartbeatCheck(silent, impl->interval));
}

void Arm(const std::shared_ptr<Keepalive::Impl>& impl, absl::Duration after) {
  impl->timer.expires_after(absl::ToChronoMicroseconds(after));
  impl->timer.async_wait(
      [weak = std::weak_ptr<Keepalive::Impl>(impl)](boost::system::error_code ec) {
        if (auto alive = weak.lock(); alive != nullptr && !ec) {
          Tick(alive);
        }
      });
}

}  // namespace

Keepalive::Keepalive(const std::shared_ptr<FramedConnection>& connection, std::string peer)
    : impl_(std::make_shared<Impl>(connection, std::move(peer))) {}

Keepalive::~Keepalive() { Stop(); }

void Keepalive::Begin(absl::Duration interval) {
  if (interval <= absl::ZeroDuration() || impl_->stopped) {
    return;
  }
  impl_->interval = interval;
  impl_->last_received = absl::Now();
  Arm(impl_, interval);
}

bool Keepalive::OnFrame(const FrameView& frame) {
  impl_->last_received = absl::Now();
  if (frame.header.type != FrameType::kHeartbeat) {
    return false;
  }
  v1::Heartbeat heartbeat;
  auto connection = impl_->connection.lock();
  if (connection != nullptr &&
      heartbeat.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size())) &&
      !heartbeat.ack()) {
    heartbeat.set_ack(true);
    (void)connection->Send(FrameType::kHeartbeat, 0, CorrelationId{}, heartbeat);
  }
  return true;
}

void Keepalive::Stop() {
  impl_->stopped = true;
  impl_->timer.cancel();
}

}  // namespace stella::runtime
