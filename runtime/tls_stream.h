// TlsStream: BoringSSL over a TCP socket, for FramedConnection (internal to runtime/; include it
// only from .cc files, it brings Asio's socket headers).
//
// Why not asio::ssl::stream: that stream keeps four 17 KiB buffers per connection for its whole
// life (a BIO pair and two staging buffers, ~68 KiB an idle connection), and it moves every TLS
// record through them with one socket call per record. Here the SSL object reads and writes
// through a BIO of our own: ciphertext is read from the socket in large chunks into a buffer
// that exists only while there is something to read, and everything one Write encrypts leaves
// in a single socket write. BoringSSL releases its own record buffers when they are empty.
//
// Threading: one connection, one executor. At most one reading operation (Handshake, ReadNow
// after WaitReadable, Shutdown) and one writing operation (Write, Flush) at a time; the two may
// interleave at their suspension points (SSL_read and SSL_write on one SSL, never concurrently).
//
// Errors are boost::system::error_code values in the form asio::ssl::stream gives them, so that
// one function turns them into statuses: a BoringSSL failure has the SSL category and the first
// packed error code (TakeSslErrors() returns the whole queue as it was at the failure),
// asio::error::eof is the peer's close_notify, asio::ssl::error::stream_truncated a TCP close
// without one, anything else comes from the socket.
#ifndef STELLA_RUNTIME_TLS_STREAM_H_
#define STELLA_RUNTIME_TLS_STREAM_H_

#include <openssl/base.h>
#include <openssl/ssl.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace stella::runtime {

class TlsStream {
 public:
  enum class Role { kClient, kServer };

  // Takes the socket; makes the SSL from `ctx` (which the SSL references). ok() is false if
  // BoringSSL could not allocate it.
  TlsStream(boost::asio::ip::tcp::socket socket, SSL_CTX* ctx);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  bool ok() const { return ssl_ != nullptr; }
  SSL* native_handle() const { return ssl_.get(); }
  boost::asio::ip::tcp::socket& socket() { return socket_; }
  boost::asio::any_io_executor get_executor() { return socket_.get_executor(); }

  // Runs the TLS handshake as `role`. An alert BoringSSL wants to send on failure is sent first.
  boost::asio::awaitable<boost::system::error_code> Handshake(Role role);

  // Waits until ReadNow can make progress: decrypted bytes or ciphertext are buffered, or the
  // socket became readable (and was read). An error if the socket failed or was closed here.
  boost::asio::awaitable<boost::system::error_code> WaitReadable();
  // Decrypts into `out` without waiting: sets *out_n > 0; or returns asio::error::would_block
  // when more ciphertext is needed (call WaitReadable); or the error that ended the stream.
  boost::system::error_code ReadNow(std::span<std::uint8_t> out, std::size_t* out_n);

  // Encrypts `data` and writes it all to the socket, in batches of a few hundred kilobytes.
  boost::asio::awaitable<boost::system::error_code> Write(std::span<const std::uint8_t> data);
  // True if reading produced TLS output to send (a KeyUpdate answer, say): call Flush.
  bool HasPendingOutput() const { return !out_.empty(); }
  // Writes what is pending.
  boost::asio::awaitable<boost::system::error_code> Flush();

  // Sends close_notify and waits for the peer's; bound it with a watchdog that closes the socket.
  boost::asio::awaitable<boost::system::error_code> Shutdown();

  // The BoringSSL error queue as it was at the last SSL-category failure (then cleared).
  std::vector<std::uint32_t> TakeSslErrors();

  // Frees the ciphertext buffers that hold nothing and are not being written (an idle
  // connection keeps none).
  void ReleaseIdleMemory();

  // The BIO's side (tls_stream.cc).
  int BioRead(char* out, int length);
  int BioWrite(const char* data, int length);

 private:
  boost::system::error_code SslFailure(int result);
  boost::asio::awaitable<boost::system::error_code> Fill();

  boost::asio::ip::tcp::socket socket_;
  bssl::UniquePtr<SSL> ssl_;
  // Ciphertext read and not yet consumed: [in_begin_, in_end_) of in_capacity_ bytes. Not a
  // vector: growing it must not zero (and so fault in) 64 KiB a new connection never fills.
  std::unique_ptr<std::uint8_t[]> in_;
  std::size_t in_capacity_ = 0;
  std::size_t in_begin_ = 0;
  std::size_t in_end_ = 0;
  bool peer_eof_ = false;  // the peer closed its side of TCP
  std::string out_;        // ciphertext BoringSSL produced, not yet handed to the socket
  std::string sending_;    // ciphertext being written
  bool flushing_ = false;  // a write of sending_ is in progress
  std::vector<std::uint32_t> errors_;
};

}  // namespace stella::runtime

#endif  // STELLA_RUNTIME_TLS_STREAM_H_
