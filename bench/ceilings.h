// The crypto ceilings the benchmark's targets are stated against, measured with BoringSSL on one
// core in the same run as the load (docs/performance.md):
//  - full mutual-TLS handshakes per second of one core, counting only what a TLS 1.3 server
//    must do per handshake: one X25519 key generation and one shared secret, one signature
//    (CertificateVerify) and two verifications (the client certificate's signature by its CA,
//    the client's CertificateVerify);
//  - AES-128-GCM over 16 KiB records, the cost of one pass over a gigabyte.
#ifndef STELLA_BENCH_CEILINGS_H_
#define STELLA_BENCH_CEILINGS_H_

namespace stella::bench {

struct Ceilings {
  double x25519_us = 0;  // one key generation plus one shared secret
  double p256_sign_us = 0;
  double p256_verify_us = 0;
  double ed25519_sign_us = 0;
  double ed25519_verify_us = 0;
  double aes128gcm_gb_per_s = 0;  // seal, 16 KiB records

  double HandshakesPerCoreP256() const {
    return 1e6 / (x25519_us + p256_sign_us + 2 * p256_verify_us);
  }
  double HandshakesPerCoreEd25519() const {
    return 1e6 / (x25519_us + ed25519_sign_us + 2 * ed25519_verify_us);
  }
  // CPU seconds to decrypt and encrypt again one gigabyte (what a relay must do at least).
  double TwoPassCpuSecondsPerGb() const { return 2 / aes128gcm_gb_per_s; }
};

// Times each primitive for about `seconds_each` of this thread's CPU. Aborts the process if
// BoringSSL refuses an operation (it never does for valid inputs: that would be a broken build).
Ceilings MeasureCeilings(double seconds_each);

// Prints the line
// ceiling x25519_us=<x> p256_sign_us=<x> ... handshakes_per_core_p256=<n> ...
void PrintCeilings(const Ceilings& ceilings);

}  // namespace stella::bench

#endif  // STELLA_BENCH_CEILINGS_H_
