#include "bench/ceilings.h"

// clang-format off
#include "runtime/boringssl.h"  // first: refuses OpenSSL 3 headers
// clang-format on

#include <openssl/aead.h>
#include <openssl/curve25519.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/nid.h>
#include <time.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

namespace stella::bench {
namespace {

double ThreadCpuSeconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "ceilings: BoringSSL refused %s\n", what);
    std::abort();
  }
}

// Microseconds of thread CPU per call of `operation`, over about `seconds` of CPU.
double MicrosPerCall(double seconds, const std::function<void()>& operation) {
  operation();  // warm caches and lazily built tables
  std::uint64_t calls = 0;
  const double start = ThreadCpuSeconds();
  double elapsed = 0;
  while (elapsed < seconds) {
    for (int i = 0; i < 16; ++i) {
      operation();
    }
    calls += 16;
    elapsed = ThreadCpuSeconds() - start;
  }
  return elapsed * 1e6 / static_cast<double>(calls);
}

}  // namespace

Ceilings MeasureCeilings(double seconds_each) {
  Ceilings out;
  std::array<std::uint8_t, 32> digest{};
  digest.fill(0x5a);

  std::array<std::uint8_t, 32> peer_public{};
  std::array<std::uint8_t, 32> peer_private{};
  X25519_keypair(peer_public.data(), peer_private.data());
  out.x25519_us = MicrosPerCall(seconds_each, [&] {
    std::array<std::uint8_t, 32> public_value{};
    std::array<std::uint8_t, 32> private_key{};
    std::array<std::uint8_t, 32> shared{};
    X25519_keypair(public_value.data(), private_key.data());
    Check(X25519(shared.data(), private_key.data(), peer_public.data()) == 1, "X25519");
  });

  bssl::UniquePtr<EC_KEY> p256(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  Check(p256 != nullptr && EC_KEY_generate_key(p256.get()) == 1, "a P-256 key");
  std::vector<std::uint8_t> signature(ECDSA_size(p256.get()));
  unsigned signature_length = 0;
  out.p256_sign_us = MicrosPerCall(seconds_each, [&] {
    Check(ECDSA_sign(0, digest.data(), digest.size(), signature.data(), &signature_length,
                     p256.get()) == 1,
          "ECDSA_sign");
  });
  out.p256_verify_us = MicrosPerCall(seconds_each, [&] {
    Check(ECDSA_verify(0, digest.data(), digest.size(), signature.data(), signature_length,
                       p256.get()) == 1,
          "ECDSA_verify");
  });

  std::array<std::uint8_t, 32> ed_public{};
  std::array<std::uint8_t, 64> ed_private{};
  std::array<std::uint8_t, 64> ed_signature{};
  ED25519_keypair(ed_public.data(), ed_private.data());
  out.ed25519_sign_us = MicrosPerCall(seconds_each, [&] {
    Check(ED25519_sign(ed_signature.data(), digest.data(), digest.size(), ed_private.data()) == 1,
          "ED25519_sign");
  });
  out.ed25519_verify_us = MicrosPerCall(seconds_each, [&] {
    Check(ED25519_verify(digest.data(), digest.size(), ed_signature.data(), ed_public.data()) == 1,
          "ED25519_verify");
  });

  constexpr std::size_t kRecord = std::size_t{16} * 1024;
  const std::array<std::uint8_t, 16> key{};
  bssl::ScopedEVP_AEAD_CTX aead;
  Check(EVP_AEAD_CTX_init(aead.get(), EVP_aead_aes_128_gcm(), key.data(), key.size(),
                          EVP_AEAD_DEFAULT_TAG_LENGTH, nullptr) == 1,
        "an AES-128-GCM key");
  std::vector<std::uint8_t> plaintext(kRecord, 0x42);
  std::vector<std::uint8_t> sealed(kRecord + EVP_AEAD_max_overhead(EVP_aead_aes_128_gcm()));
  std::array<std::uint8_t, 12> nonce{};
  std::uint64_t counter = 0;
  const double record_us = MicrosPerCall(seconds_each, [&] {
    ++counter;
    std::copy_n(reinterpret_cast<const std::uint8_t*>(&counter), sizeof(counter), nonce.data());
    std::size_t sealed_length = 0;
    Check(EVP_AEAD_CTX_seal(aead.get(), sealed.data(), &sealed_length, sealed.size(), nonce.data(),
                            nonce.size(), plaintext.data(), plaintext.size(), nullptr, 0) == 1,
          "EVP_AEAD_CTX_seal");
  });
  out.aes128gcm_gb_per_s = static_cast<double>(kRecord) / record_us / 1e3;
  return out;
}

void PrintCeilings(const Ceilings& ceilings) {
  std::printf(
      "ceiling x25519_us=%.2f p256_sign_us=%.2f p256_verify_us=%.2f ed25519_sign_us=%.2f "
      "ed25519_verify_us=%.2f handshakes_per_core_p256=%.0f handshakes_per_core_ed25519=%.0f "
      "aes128gcm_gb_per_s=%.3f two_pass_cpu_s_per_gb=%.4f\n",
      ceilings.x25519_us, ceilings.p256_sign_us, ceilings.p256_verify_us, ceilings.ed25519_sign_us,
      ceilings.ed25519_verify_us, ceilings.HandshakesPerCoreP256(),
      ceilings.HandshakesPerCoreEd25519(), ceilings.aes128gcm_gb_per_s,
      ceilings.TwoPassCpuSecondsPerGb());
  std::fflush(stdout);
}

}  // namespace stella::bench
