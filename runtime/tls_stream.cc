#include "runtime/tls_stream.h"

#include <fcntl.h>

// clang-format off
#include "runtime/boringssl.h"  // first among OpenSSL-API headers: refuses OpenSSL 3
// clang-format on

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <climits>
#include <cstring>

namespace stella::runtime {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

// Ciphertext read per socket call: several full TLS records, so a large body costs few reads.
constexpr std::size_t kReadChunk = std::size_t{64} * 1024;
// Plaintext encrypted per socket write: bounds the ciphertext staged for one write.
constexpr std::size_t kWriteBatch = std::size_t{256} * 1024;
// Ciphertext staging kept between writes of a busy connection (about two batches); a buffer that
// grew past it is freed after use. ReleaseIdleMemory frees the rest once the connection idles.
constexpr std::size_t kKeepCapacity = std::size_t{640} * 1024;

TlsStream* StreamOf(BIO* bio) { return static_cast<TlsStream*>(BIO_get_data(bio)); }

int BioReadThunk(BIO* bio, char* out, int length) {
  BIO_clear_retry_flags(bio);
  const int n = StreamOf(bio)->BioRead(out, length);
  if (n < 0) {
    BIO_set_retry_read(bio);
  }
  return n;
}

int BioWriteThunk(BIO* bio, const char* data, int length) {
  BIO_clear_retry_flags(bio);
  return StreamOf(bio)->BioWrite(data, length);
}

long BioCtrlThunk(BIO* /*bio*/, int command, long /*larg*/,
                  void* /*parg*/) {  // NOLINT(google-runtime-int)
  return command == BIO_CTRL_FLUSH ? 1 : 0;
}

int BioCreateThunk(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

// The method of every TlsStream's BIO, made once. BoringSSL never frees a BIO_METHOD in use.
const BIO_METHOD* StreamBioMethod() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* made = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "stella-tls");
    if (made == nullptr || !BIO_meth_set_read(made, BioReadThunk) ||
        !BIO_meth_set_write(made, BioWriteThunk) || !BIO_meth_set_ctrl(made, BioCtrlThunk) ||
        !BIO_meth_set_create(made, BioCreateThunk)) {
      return static_cast<BIO_METHOD*>(nullptr);
    }
    return made;
  }();
  return method;
}

void ShrinkIfLarge(std::string& buffer) {
  buffer.clear();
  if (buffer.capacity() > kKeepCapacity) {
    std::string().swap(buffer);
  }
}

}  // namespace

TlsStream::TlsStream(tcp::socket socket, SSL_CTX* ctx)
    : socket_(std::move(socket)), ssl_(SSL_new(ctx)) {
  const BIO_METHOD* method = StreamBioMethod();
  BIO* bio = method == nullptr ? nullptr : BIO_new(method);
  if (ssl_ == nullptr || bio == nullptr) {
    BIO_free(bio);
    ssl_.reset();
    return;
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_.get(), bio, bio);  // one BIO both ways: the SSL takes the one reference
  error_code ignored;
  socket_.non_blocking(true, ignored);
  // Asio does not open sockets close-on-exec. A child process that inherited this connection
  // would keep it open after this process died, and the peer would not see the close.
  ::fcntl(socket_.native_handle(), F_SETFD, FD_CLOEXEC);
}

TlsStream::~TlsStream() = default;

int TlsStream::BioRead(char* out, int length) {
  const std::size_t available = in_end_ - in_begin_;
  if (available == 0) {
    return peer_eof_ ? 0 : -1;
  }
  const std::size_t n = std::min(available, static_cast<std::size_t>(length));
  std::memcpy(out, in_.get() + in_begin_, n);
  in_begin_ += n;
  if (in_begin_ == in_end_) {
    in_begin_ = in_end_ = 0;
  }
  return static_cast<int>(n);
}

int TlsStream::BioWrite(const char* data, int length) {
  out_.append(data, static_cast<std::size_t>(length));
  return length;
}

error_code TlsStream::SslFailure(int result) {
  const int reason = SSL_get_error(ssl_.get(), result);
  if (reason == SSL_ERROR_ZERO_RETURN) {
    return asio::error::eof;  // the peer's close_notify
  }
  errors_.clear();
  std::uint32_t packed = 0;
  while ((packed = ERR_get_error()) != 0) {
    errors_.push_back(packed);
  }
  if (reason != SSL_ERROR_SSL && peer_eof_) {
    return asio::ssl::error::stream_truncated;
  }
  if (errors_.empty()) {
    // No BoringSSL reason: the transport ended the stream.
    return peer_eof_ ? error_code(asio::ssl::error::stream_truncated)
                     : error_code(asio::error::connection_reset);
  }
  return {static_cast<int>(errors_.front()), asio::error::get_ssl_category()};
}

std::vector<std::uint32_t> TlsStream::TakeSslErrors() { return std::exchange(errors_, {}); }

asio::awaitable<error_code> TlsStream::Fill() {
  while (true) {
    error_code ec;
    co_await socket_.async_wait(tcp::socket::wait_read,
                                asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      co_return ec;
    }
    if (in_begin_ > 0) {  // compact what BoringSSL has not taken yet
      std::memmove(in_.get(), in_.get() + in_begin_, in_end_ - in_begin_);
      in_end_ -= in_begin_;
      in_begin_ = 0;
    }
    if (in_capacity_ < in_end_ + kReadChunk) {
      const std::size_t capacity = in_end_ + kReadChunk;
      std::unique_ptr<std::uint8_t[]> grown(new std::uint8_t[capacity]);  // left uninitialised
      if (in_end_ > 0) {
        std::memcpy(grown.get(), in_.get(), in_end_);
      }
      in_ = std::move(grown);
      in_capacity_ = capacity;
    }
    const std::size_t n = socket_.read_some(asio::buffer(in_.get() + in_end_, kReadChunk), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      continue;  // a spurious wake-up
    }
    if (ec == asio::error::eof) {
      peer_eof_ = true;
      co_return error_code{};
    }
    if (ec) {
      co_return ec;
    }
    in_end_ += n;
    co_return error_code{};
  }
}

asio::awaitable<error_code> TlsStream::Handshake(Role role) {
  if (role == Role::kServer) {
    SSL_set_accept_state(ssl_.get());
  } else {
    SSL_set_connect_state(ssl_.get());
  }
  while (true) {
    ERR_clear_error();
    const int result = SSL_do_handshake(ssl_.get());
    const int reason = result == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_.get(), result);
    error_code failure;
    if (result != 1 && reason != SSL_ERROR_WANT_READ) {
      failure = SslFailure(result);  // before any await: the error queue is per thread
    }
    if (!out_.empty()) {
      // Our flight, or the alert that explains a failure: the peer should see it either way.
      if (error_code written = co_await Flush(); written && !failure) {
        co_return written;
      }
    }
    if (failure) {
      co_return failure;
    }
    if (result == 1) {
      co_return error_code{};
    }
    if (peer_eof_ && in_begin_ == in_end_) {
      co_return asio::ssl::error::stream_truncated;
    }
    if (error_code filled = co_await Fill(); filled) {
      co_return filled;
    }
  }
}

asio::awaitable<error_code> TlsStream::WaitReadable() {
  if (in_end_ > in_begin_ || peer_eof_ || SSL_pending(ssl_.get()) > 0) {
    co_return error_code{};
  }
  co_return co_await Fill();
}

error_code TlsStream::ReadNow(std::span<std::uint8_t> out, std::size_t* out_n) {
  *out_n = 0;
  ERR_clear_error();
  const int length = static_cast<int>(std::min<std::size_t>(out.size(), INT_MAX));
  const int result = SSL_read(ssl_.get(), out.data(), length);
  if (result > 0) {
    *out_n = static_cast<std::size_t>(result);
    return {};
  }
  if (SSL_get_error(ssl_.get(), result) == SSL_ERROR_WANT_READ && !peer_eof_) {
    return asio::error::would_block;
  }
  return SslFailure(result);
}

asio::awaitable<error_code> TlsStream::Write(std::span<const std::uint8_t> data) {
  while (!data.empty()) {
    const std::size_t batch_end = std::min(data.size(), kWriteBatch);
    // Room for the batch's records and their overhead up front: no regrowth while sealing.
    out_.reserve(out_.size() + batch_end + batch_end / 64 + 1024);
    std::size_t done = 0;
    while (done < batch_end) {
      ERR_clear_error();
      const int length = static_cast<int>(batch_end - done);
      const int result = SSL_write(ssl_.get(), data.data() + done, length);
      if (result <= 0) {
        co_return SslFailure(result);
      }
      done += static_cast<std::size_t>(result);
    }
    data = data.subspan(batch_end);
    if (error_code written = co_await Flush(); written) {
      co_return written;
    }
  }
  co_return error_code{};
}

asio::awaitable<error_code> TlsStream::Flush() {
  while (!out_.empty()) {
    // Swap first: the reader may append (post-handshake messages) while this write is pending.
    std::swap(out_, sending_);
    error_code ec;
    flushing_ = true;
    co_await asio::async_write(socket_, asio::buffer(sending_),
                               asio::redirect_error(asio::use_awaitable, ec));
    flushing_ = false;
    ShrinkIfLarge(sending_);
    if (ec) {
      co_return ec;
    }
  }
  co_return error_code{};
}

asio::awaitable<error_code> TlsStream::Shutdown() {
  while (true) {
    ERR_clear_error();
    const int result = SSL_shutdown(ssl_.get());
    const int reason = result < 0 ? SSL_get_error(ssl_.get(), result) : SSL_ERROR_NONE;
    if (error_code written = co_await Flush(); written) {
      co_return written;
    }
    if (result == 1) {
      co_return error_code{};  // both close_notify sent and received
    }
    if (result < 0 && reason != SSL_ERROR_WANT_READ) {
      ERR_clear_error();
      co_return error_code{};  // nothing more to exchange; the socket closes next
    }
    if (peer_eof_ && in_begin_ == in_end_) {
      co_return error_code{};  // the peer closed without answering
    }
    if (error_code filled = co_await Fill(); filled) {
      co_return filled;
    }
  }
}

void TlsStream::ReleaseIdleMemory() {
  if (in_begin_ == in_end_ && in_ != nullptr) {
    in_.reset();
    in_capacity_ = 0;
    in_begin_ = in_end_ = 0;
  }
  if (out_.empty()) {
    std::string().swap(out_);
  }
  if (!flushing_) {
    std::string().swap(sending_);
  }
}

}  // namespace stella::runtime
