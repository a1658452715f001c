#include "runtime/framed_connection.h"

#include <openssl/err.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstring>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "runtime/async.h"
#include "runtime/boringssl.h"  // must come first among OpenSSL-API headers
#include "runtime/status_text.h"
#include "runtime/tls/online_revocation.h"
#include "runtime/tls_stream.h"
#include "spdlog/spdlog.h"
#include "stella/router/v1/frames.pb.h"

namespace stella::runtime {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

// Plaintext decrypted per SSL_read: one full TLS record.
constexpr std::size_t kReadChunk = std::size_t{16} * 1024;
// A reader whose last wait for data took longer than this treats its connection as idle and
// frees its buffers before waiting again; a busy connection keeps them (no allocation per read).
constexpr auto kIdleWait = std::chrono::milliseconds(50);
// The first reads of a connection (handshake, HELLO) free their buffers too: most connections
// of a service fleet go quiet right after registering.
constexpr int kStartupReads = 4;
constexpr char kFailureLabelUrl[] = "type.stella.dev/failure-label";

std::string AddressOf(const tcp::socket& socket) {
  error_code ec;
  tcp::endpoint endpoint = socket.remote_endpoint(ec);
  if (ec) {
    return "(unknown peer)";
  }
  return absl::StrCat(endpoint.address().to_string(), ":", endpoint.port());
}

bool IsCertificateLabel(const std::string& label) {
  return label == "rejected_by_peer" || label == "no_certificate" || label == "unknown_ca" ||
         label == "expired" || label == "not_yet_valid" || label == "revoked" ||
         label == "crl_missing" || label == "crl_expired" || label == "crl_invalid" ||
         label == "name_mismatch" || label == "wrong_usage" || label == "bad_signature";
}

absl::Status Labelled(absl::StatusCode code, const std::string& message, const std::string& label) {
  absl::Status status(code, message);
  status.SetPayload(kFailureLabelUrl, absl::Cord(label));
  return status;
}

}  // namespace

std::string FailureLabelOf(const absl::Status& status) {
  if (status.ok()) {
    return "";
  }
  absl::optional<absl::Cord> label = status.GetPayload(kFailureLabelUrl);
  return label.has_value() ? std::string(*label) : std::string("other");
}

struct FramedConnection::Impl {
  Impl(tcp::socket socket, std::shared_ptr<const tls::TlsContext> tls_in,
       ConnectionOptions options_in)
      : tls(std::move(tls_in)),
        options(options_in),
        remote(AddressOf(socket)),
        stream(std::move(socket), tls->native_handle()),
        wake(stream.get_executor()),
        decoder(options.max_payload_size) {}

  // Converts an Asio or BoringSSL error into a Status with a readable sentence and a label. The
  // one place where error_code becomes absl::Status.
  absl::Status StatusFrom(const error_code& ec, const char* during) {
    if (ec.category() == asio::error::get_ssl_category()) {
      std::vector<uint32_t> errors = stream.TakeSslErrors();
      if (errors.empty()) {
        errors.push_back(static_cast<uint32_t>(ec.value()));
      }
      tls::TlsContext::Failure failure = tls->DescribeFailure(errors, diagnostics);
      absl::StatusCode code = absl::StatusCode::kFailedPrecondition;
      if (IsCertificateLabel(failure.label)) {
        code = absl::StatusCode::kUnauthenticated;
      } else if (failure.label == "not_tls") {
        code = absl::StatusCode::kInvalidArgument;
      } else if (failure.label == "other") {
        code = absl::StatusCode::kUnavailable;
      }
      return Labelled(code, absl::StrCat(failure.sentence, " (peer ", remote, ")"), failure.label);
    }
    if (ec == asio::ssl::error::stream_truncated) {
      return Labelled(absl::StatusCode::kUnavailable,
                      absl::StrCat("peer ", remote, " closed the TCP connection ", during,
                                   " without a TLS close_notify"),
                      "peer_closed");
    }
    if (ec == asio::error::eof) {
      return Labelled(absl::StatusCode::kUnavailable,
                      absl::StrCat("peer ", remote, " closed the connection ", during),
                      "peer_closed");
    }
    return Labelled(
        absl::StatusCode::kUnavailable,
        absl::StrCat("connection with ", remote, " failed ", during, ": ", ec.message()),
        "network");
  }

  // Appends a frame to the writer queue with `append` unless the connection is closing or (for
  // a `bounded` frame) the queue is over its bound, and wakes the writer.
  template <typename Append>
  absl::Status Enqueue(Append append, bool bounded = true) {
    if (closing) {
      return absl::FailedPreconditionError(absl::StrCat("connection with ", remote, " is closing"));
    }
    if (bounded && pending.size() > options.max_queued_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the writer queue for ", remote, " holds ", pending.size(), " bytes, over its limit of ",
          options.max_queued_bytes, " bytes: the peer reads too slowly"));
    }
    absl::Status status = append(&pending);
    if (status.ok()) {
      wake.cancel();
    }
    return status;
  }

  void SetReason(absl::Status reason) {
    if (!reason_set) {
      close_reason = std::move(reason);
      reason_set = true;
    }
  }

  void CloseSocket() {
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.socket().close(ignored);
  }

  // Called by each loop as it ends; the last one reports the close.
  void LoopEnded() {
    if (--loops_running > 0) {
      wake.cancel();  // the writer may be waiting for the reader to end
      return;
    }
    CloseSocket();
    CloseHandler handler = std::move(on_closed);
    on_frame = nullptr;  // handlers may hold the connection: break the cycle
    on_closed = nullptr;
    if (handler) {
      handler(close_reason);
    }
  }

  std::shared_ptr<const tls::TlsContext> tls;
  ConnectionOptions options;
  std::string remote;
  tls::HandshakeDiagnostics diagnostics;
  TlsStream stream;         // holds the socket; its BIO points at it, so it never moves
  asio::steady_timer wake;  // wakes the writer: new frames, close, reader ended
  FrameDecoder decoder;
  std::string pending;  // frames queued since the writer's last write
  std::string writing;  // frames being written
  FrameHandler on_frame;
  CloseHandler on_closed;
  tls::CertificateIdentity peer;
  int loops_running = 0;
  bool closing = false;
  bool reader_done = false;
  bool timed_out = false;  // the handshake timed out, or Abort: no graceful close
  bool reason_set = false;
  absl::Status close_reason;
};

namespace {

// Closes the socket if `timer` fires first; the operation it guards then fails.
void ArmWatchdog(asio::steady_timer& timer, absl::Duration timeout,
                 std::weak_ptr<FramedConnection> weak, std::function<void()> on_expiry) {
  timer.expires_after(absl::ToChronoMilliseconds(timeout));
  timer.async_wait([weak = std::move(weak), on_expiry = std::move(on_expiry)](error_code ec) {
    if (!ec && weak.lock()) {
      on_expiry();
    }
  });
}

}  // namespace

FramedConnection::FramedConnection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FramedConnection::~FramedConnection() = default;

std::shared_ptr<FramedConnection> FramedConnection::FromAccepted(
    tcp::socket socket, std::shared_ptr<const tls::TlsContext> tls, ConnectionOptions options) {
  return std::shared_ptr<FramedConnection>(
      new FramedConnection(std::make_unique<Impl>(std::move(socket), std::move(tls), options)));
}

namespace {

// RevocationMode Online: checks the peer against its CRL distribution point now that the
// handshake is done (fetching cannot happen inside BoringSSL's synchronous verify callback).
// A resumed session was checked when it was first made.
asio::awaitable<absl::Status> CheckOnlineRevocation(FramedConnection::Impl& impl) {
  tls::OnlineRevocation* online = impl.tls->online_revocation();
  SSL* ssl = impl.stream.native_handle();
  const tls::TlsOptions& options = impl.tls->options();
  if (online == nullptr || SSL_session_reused(ssl) ||
      (options.role == tls::TlsRole::kClient && options.skip_server_validation)) {
    co_return absl::OkStatus();
  }
  std::vector<X509*> chain;
  if (STACK_OF(X509)* full = SSL_get_peer_full_cert_chain(ssl)) {
    for (size_t i = 0; i < sk_X509_num(full); ++i) {
      chain.push_back(sk_X509_value(full, i));
    }
  }
  tls::VerifyOptions verify;
  verify.peer_usage = options.role == tls::TlsRole::kServer ? tls::CertificateUsage::kClient
                                                            : tls::CertificateUsage::kServer;
  verify.allow_untrusted_root =
      options.role == tls::TlsRole::kServer && options.allow_untrusted_root;
  std::optional<tls::VerifyFailure> failure = co_await online->Check(
      impl.stream.get_executor(), std::move(chain), *impl.tls->trust(), verify);
  if (!failure.has_value()) {
    co_return absl::OkStatus();
  }
  impl.CloseSocket();
  std::string label = tls::VerifyFailureReasonName(failure->reason);
  impl.diagnostics.failure = *std::move(failure);
  co_return Labelled(absl::StatusCode::kUnauthenticated,
                     absl::StrCat(impl.diagnostics.failure->sentence, " (peer ", impl.remote, ")"),
                     label);
}

asio::awaitable<absl::Status> RunHandshake(std::shared_ptr<FramedConnection> self,
                                           FramedConnection::Impl& impl, TlsStream::Role role) {
  SSL* ssl = impl.stream.native_handle();
  if (ssl == nullptr) {
    co_return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate TLS state for the connection with ", impl.remote));
  }
  if (absl::Status status = impl.tls->PrepareSsl(ssl, &impl.diagnostics); !status.ok()) {
    co_return status;
  }
  asio::steady_timer watchdog(impl.stream.get_executor());
  ArmWatchdog(watchdog, impl.options.handshake_timeout, self, [&impl] {
    impl.timed_out = true;
    impl.CloseSocket();
  });
  error_code ec;
  ec = co_await impl.stream.Handshake(role);
  watchdog.cancel();
  if (impl.timed_out) {
    co_return Labelled(absl::StatusCode::kDeadlineExceeded,
                       absl::StrCat("TLS handshake with ", impl.remote, " did not finish within ",
                                    "HandshakeTimeoutSeconds=",
                                    absl::ToDoubleSeconds(impl.options.handshake_timeout), " s"),
                       "handshake_timeout");
  }
  if (ec) {
    co_return impl.StatusFrom(ec, "during the TLS handshake");
  }
  const uint8_t* alpn = nullptr;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  if (alpn_len != std::strlen(tls::kAlpnProtocol) ||
      std::memcmp(alpn, tls::kAlpnProtocol, alpn_len) != 0) {
    impl.CloseSocket();
    co_return Labelled(absl::StatusCode::kFailedPrecondition,
                       absl::StrCat("peer ", impl.remote,
                                    " did not negotiate the ALPN protocol stella/1: it is not a "
                                    "Stella peer"),
                       "no_alpn");
  }
  if (impl.diagnostics.verified_peer.has_value()) {
    impl.peer = *std::move(impl.diagnostics.verified_peer);  // described when it was verified
    impl.diagnostics.verified_peer.reset();
  } else if (bssl::UniquePtr<X509> peer(SSL_get_peer_certificate(ssl)); peer != nullptr) {
    impl.peer = tls::IdentityOf(peer.get());  // a resumed session: nothing was verified
  }
  if (absl::Status revoked = co_await CheckOnlineRevocation(impl); !revoked.ok()) {
    co_return revoked;
  }
  if (!impl.diagnostics.relied_on_dev_switch.empty()) {
    spdlog::warn(
        "DEV MODE: the TLS connection with {} ({}) was accepted only because {} is set; never "
        "use it in production",
        impl.remote, impl.peer.subject.empty() ? "no certificate" : impl.peer.subject,
        impl.diagnostics.relied_on_dev_switch);
  }
  co_return absl::OkStatus();
}

// Hands every whole frame the decoder holds to the frame handler. False if the peer broke the
// protocol (it was sent a GOAWAY and the connection is closing).
bool DeliverFrames(FramedConnection& self, FramedConnection::Impl& impl) {
  while (!impl.closing) {
    absl::StatusOr<std::optional<FrameView>> next = impl.decoder.Next();
    if (!next.ok()) {
      // The peer broke the protocol: tell it why, then close.
      router::v1::Goaway goaway;
      goaway.set_code(static_cast<int>(next.status().code()));
      goaway.set_reason(StatusText(next.status().message()));
      (void)self.Send(FrameType::kGoaway, 0, CorrelationId{}, goaway);
      self.Close(Labelled(
          next.status().code(),
          absl::StrCat("peer ", impl.remote, " broke the protocol: ", next.status().message()),
          "protocol_violation"));
      return false;
    }
    if (!next->has_value()) {
      return true;
    }
    if (impl.on_frame) {
      impl.on_frame(**next);
    }
  }
  return true;
}

asio::awaitable<void> ReadLoop(std::shared_ptr<FramedConnection> self,
                               FramedConnection::Impl& impl) {
  bool idle = true;
  for (int reads = 0;; ++reads) {
    if (idle || reads < kStartupReads) {
      impl.decoder.ReleaseIdleMemory();
      impl.stream.ReleaseIdleMemory();
      if (impl.pending.empty()) {
        std::string().swap(impl.pending);
      }
      if (impl.writing.empty()) {  // not being written
        std::string().swap(impl.writing);
      }
    }
    const auto wait_started = std::chrono::steady_clock::now();
    error_code ec = co_await impl.stream.WaitReadable();
    idle = std::chrono::steady_clock::now() - wait_started > kIdleWait;
    // Decrypt everything that arrived, record by record, handing frames on as they complete.
    bool violated = false;
    while (!ec) {
      std::span<std::uint8_t> room = impl.decoder.PrepareWrite(kReadChunk);
      std::size_t n = 0;
      ec = impl.stream.ReadNow(room, &n);
      if (ec) {
        break;
      }
      impl.decoder.CommitWrite(n);
      if (!DeliverFrames(*self, impl)) {
        violated = true;
        break;
      }
    }
    if (impl.stream.HasPendingOutput()) {
      impl.wake.cancel();  // reading produced TLS output (a KeyUpdate answer): the writer sends it
    }
    if (violated) {
      break;
    }
    if (ec == asio::error::would_block) {
      continue;
    }
    if (!impl.closing) {
      impl.SetReason(impl.StatusFrom(ec, "while reading"));
      impl.closing = true;
    }
    break;
  }
  impl.reader_done = true;
  impl.LoopEnded();
}

asio::awaitable<void> WriteLoop(std::shared_ptr<FramedConnection> self,
                                FramedConnection::Impl& impl) {
  bool failed = false;
  while (true) {
    if (impl.pending.empty()) {
      if (impl.stream.HasPendingOutput()) {
        if (error_code ec = co_await impl.stream.Flush(); ec) {
          impl.SetReason(impl.StatusFrom(ec, "while writing"));
          impl.closing = true;
          failed = true;
          break;
        }
        continue;
      }
      if (impl.closing) {
        break;
      }
      impl.wake.expires_at(asio::steady_timer::time_point::max());
      error_code ignored;
      co_await impl.wake.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      continue;
    }
    std::swap(impl.pending, impl.writing);
    const error_code ec = co_await impl.stream.Write(
        std::span(reinterpret_cast<const std::uint8_t*>(impl.writing.data()), impl.writing.size()));
    impl.writing.clear();  // keeps its capacity for the next burst; an idle reader frees it
    if (ec) {
      impl.SetReason(impl.StatusFrom(ec, "while writing"));
      impl.closing = true;
      impl.pending.clear();
      failed = true;
      break;
    }
  }
  if (!failed && !impl.timed_out) {
    // Graceful close: stop the reader (TlsStream allows one reading operation at a time and
    // Shutdown reads the peer's close_notify), then exchange close_notify, bounded.
    if (!impl.reader_done) {
      error_code ignored;
      impl.stream.socket().cancel(ignored);
      while (!impl.reader_done) {
        impl.wake.expires_at(asio::steady_timer::time_point::max());
        co_await impl.wake.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      }
    }
    asio::steady_timer watchdog(impl.stream.get_executor());
    ArmWatchdog(watchdog, impl.options.close_timeout, self, [&impl] { impl.CloseSocket(); });
    (void)co_await impl.stream.Shutdown();
    watchdog.cancel();
  }
  impl.CloseSocket();
  impl.LoopEnded();
}

}  // namespace

asio::awaitable<absl::StatusOr<std::shared_ptr<FramedConnection>>> FramedConnection::Connect(
    asio::any_io_executor executor, std::string host, std::uint16_t port,
    std::shared_ptr<const tls::TlsContext> tls, ConnectionOptions options) {
  const std::string target = absl::StrCat(host, ":", port);
  tcp::resolver resolver(executor);
  error_code ec;
  tcp::resolver::results_type endpoints = co_await resolver.async_resolve(
      host, std::to_string(port), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    co_return Labelled(absl::StatusCode::kUnavailable,
                       absl::StrCat("cannot resolve ", target, ": ", ec.message()), "resolve");
  }
  tcp::socket socket(executor);
  asio::steady_timer watchdog(executor);
  bool timed_out = false;
  watchdog.expires_after(absl::ToChronoMilliseconds(options.handshake_timeout));
  watchdog.async_wait([&socket, &timed_out](error_code wait_ec) {
    if (!wait_ec) {
      timed_out = true;
      error_code ignored;
      socket.close(ignored);
    }
  });
  co_await asio::async_connect(socket, endpoints, asio::redirect_error(asio::use_awaitable, ec));
  watchdog.cancel();
  if (timed_out) {
    co_return Labelled(absl::StatusCode::kDeadlineExceeded,
                       absl::StrCat("cannot connect to ", target, " within ",
                                    absl::ToDoubleSeconds(options.handshake_timeout), " s"),
                       "connect_timeout");
  }
  if (ec) {
    co_return Labelled(absl::StatusCode::kUnavailable,
                       absl::StrCat("cannot connect to ", target, ": ", ec.message()), "connect");
  }
  socket.set_option(tcp::no_delay(true), ec);
  std::shared_ptr<FramedConnection> connection(
      new FramedConnection(std::make_unique<Impl>(std::move(socket), std::move(tls), options)));
  connection->impl_->remote = target;
  absl::Status status =
      co_await RunHandshake(connection, *connection->impl_, TlsStream::Role::kClient);
  if (!status.ok()) {
    co_return status;
  }
  co_return connection;
}

asio::awaitable<absl::Status> FramedConnection::Handshake() {
  std::shared_ptr<FramedConnection> self = shared_from_this();
  error_code ec;
  impl_->stream.socket().set_option(tcp::no_delay(true), ec);
  co_return co_await RunHandshake(self, *impl_, TlsStream::Role::kServer);
}

void FramedConnection::Start(FrameHandler on_frame, CloseHandler on_closed) {
  Impl& impl = *impl_;
  impl.on_frame = std::move(on_frame);
  impl.on_closed = std::move(on_closed);
  impl.loops_running = 2;
  auto executor = impl.stream.get_executor();
  asio::co_spawn(executor, ReadLoop(shared_from_this(), impl),
                 LogCoroutineFailure(absl::StrCat("connection reader for ", impl.remote)));
  asio::co_spawn(executor, WriteLoop(shared_from_this(), impl),
                 LogCoroutineFailure(absl::StrCat("connection writer for ", impl.remote)));
}

absl::Status FramedConnection::Send(FrameType type, std::uint16_t flags, const CorrelationId& id,
                                    const google::protobuf::MessageLite& payload) {
  return impl_->Enqueue([&](std::string* out) {
    return AppendFrame(type, flags, id, payload, impl_->options.max_payload_size, out);
  });
}

absl::Status FramedConnection::Send(FrameType type, std::uint16_t flags, const CorrelationId& id,
                                    const google::protobuf::MessageLite& payload,
                                    std::span<const std::uint8_t> raw_tail) {
  return impl_->Enqueue([&](std::string* out) {
    return AppendFrame(type, flags, id, payload, raw_tail, impl_->options.max_payload_size, out);
  });
}

absl::Status FramedConnection::SendControl(FrameType type, std::uint16_t flags,
                                           const CorrelationId& id,
                                           const google::protobuf::MessageLite& payload) {
  return impl_->Enqueue(
      [&](std::string* out) {
        return AppendFrame(type, flags, id, payload, impl_->options.max_payload_size, out);
      },
      /*bounded=*/false);
}

absl::Status FramedConnection::SendBytes(FrameType type, std::uint16_t flags,
                                         const CorrelationId& id,
                                         std::span<const std::uint8_t> payload) {
  return impl_->Enqueue([&](std::string* out) {
    return AppendFrame(type, flags, id, payload, impl_->options.max_payload_size, out);
  });
}

void FramedConnection::Close(absl::Status reason) {
  Impl& impl = *impl_;
  impl.SetReason(std::move(reason));
  impl.closing = true;
  if (impl.loops_running == 0) {
    impl.CloseSocket();  // never started: nothing to flush
    return;
  }
  impl.wake.cancel();
}

void FramedConnection::Abort(absl::Status reason) {
  Impl& impl = *impl_;
  impl.SetReason(std::move(reason));
  impl.closing = true;
  impl.timed_out = true;
  impl.pending.clear();
  impl.CloseSocket();  // fails the reader and any write in progress; the loops then end
  impl.wake.cancel();
}

const tls::CertificateIdentity& FramedConnection::peer() const { return impl_->peer; }

bool FramedConnection::session_resumed() const {
  return SSL_session_reused(impl_->stream.native_handle()) == 1;
}

std::string FramedConnection::tls_version() const {
  return SSL_get_version(impl_->stream.native_handle());
}

const tls::TlsContext& FramedConnection::tls() const { return *impl_->tls; }

const std::string& FramedConnection::remote_address() const { return impl_->remote; }

asio::any_io_executor FramedConnection::executor() const { return impl_->stream.get_executor(); }

std::size_t FramedConnection::queued_bytes() const {
  return impl_->pending.size() + impl_->writing.size();
}

}  // namespace stella::runtime
