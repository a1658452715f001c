#include "runtime/tls/cert_builder.h"

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/cipher.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/pkcs8.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/tls/x509.h"

namespace stella::runtime::tls {
namespace {

absl::Status Fail(absl::string_view what) {
  return SslError(absl::StatusCode::kInternal, absl::StrCat("cannot mint: ", what));
}

absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> GenerateKey(KeyType type) {
  const int id = type == KeyType::kEd25519 ? EVP_PKEY_ED25519 : EVP_PKEY_EC;
  bssl::UniquePtr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new_id(id, nullptr));
  if (ctx == nullptr || !EVP_PKEY_keygen_init(ctx.get())) {
    return Fail("key generation setup failed");
  }
  if (type == KeyType::kEcdsaP256 &&
      !EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx.get(), NID_X9_62_prime256v1)) {
    return Fail("cannot select the P-256 curve");
  }
  EVP_PKEY* raw = nullptr;
  if (!EVP_PKEY_keygen(ctx.get(), &raw)) {
    return Fail("key generation failed");
  }
  return bssl::UniquePtr<EVP_PKEY>(raw);
}

bool SetTime(absl::Time t, ASN1_TIME* (*get)(X509*), X509* cert) {
  return ASN1_TIME_set(get(cert), absl::ToTimeT(t)) != nullptr;
}

// Adds an extension given in OpenSSL's configuration syntax ("critical,CA:TRUE").
bool AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  bssl::UniquePtr<X509_EXTENSION> ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value.c_str()));
  return ext != nullptr && X509_add_ext(cert, ext.get(), -1);
}

const EVP_MD* DigestFor(EVP_PKEY* key) {
  // Ed25519 signs the message itself; every other key type here signs a SHA-256 digest.
  return EVP_PKEY_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
}

std::string BioContents(BIO* bio) {
  const uint8_t* data = nullptr;
  size_t len = 0;
  BIO_mem_contents(bio, &data, &len);
  return std::string(reinterpret_cast<const char*>(data), len);
}

}  // namespace

absl::StatusOr<MintedCert> MintCertificate(const CertSpec& spec, const MintedCert* issuer) {
  absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> key = GenerateKey(spec.key_type);
  if (!key.ok()) {
    return key.status();
  }
  bssl::UniquePtr<X509> cert(X509_new());
  if (cert == nullptr || !X509_set_version(cert.get(), X509_VERSION_3)) {
    return Fail("cannot create the certificate");
  }
  std::uint64_t serial = spec.serial;
  while (serial == 0) {
    RAND_bytes(reinterpret_cast<uint8_t*>(&serial), sizeof(serial));
    serial &= 0x7FFFFFFFFFFFFFFFull;  // keep it positive in DER
  }
  if (!ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert.get()), serial)) {
    return Fail("cannot set the serial number");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (!spec.organization.empty() &&
      !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                  reinterpret_cast<const uint8_t*>(spec.organization.c_str()), -1,
                                  -1, 0)) {
    return Fail("cannot set the organization");
  }
  if (!spec.common_name.empty() &&
      !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                  reinterpret_cast<const uint8_t*>(spec.common_name.c_str()), -1,
                                  -1, 0)) {
    return Fail("cannot set the common name");
  }
  X509* signer_cert = issuer != nullptr ? issuer->cert.get() : cert.get();
  EVP_PKEY* signer_key = issuer != nullptr ? issuer->key.get() : key->get();
  if (!X509_set_issuer_name(cert.get(), X509_get_subject_name(signer_cert)) ||
      !SetTime(spec.not_before, X509_getm_notBefore, cert.get()) ||
      !SetTime(spec.not_after, X509_getm_notAfter, cert.get()) ||
      !X509_set_pubkey(cert.get(), key->get())) {
    return Fail("cannot set issuer, validity or public key");
  }

  bool ok = true;
  if (spec.is_ca) {
    ok = ok && AddExtension(cert.get(), signer_cert, NID_basic_constraints, "critical,CA:TRUE");
    ok = ok && AddExtension(cert.get(), signer_cert, NID_key_usage,
                            "critical,keyCertSign,cRLSign,digitalSignature");
  } else {
    ok = ok && AddExtension(cert.get(), signer_cert, NID_basic_constraints, "critical,CA:FALSE");
    ok = ok && AddExtension(cert.get(), signer_cert, NID_key_usage, "critical,digitalSignature");
  }
  std::vector<std::string> usages;
  if (spec.server_auth) {
    usages.emplace_back("serverAuth");
  }
  if (spec.client_auth) {
    usages.emplace_back("clientAuth");
  }
  if (!usages.empty()) {
    ok = ok && AddExtension(cert.get(), signer_cert, NID_ext_key_usage, absl::StrJoin(usages, ","));
  }
  std::vector<std::string> names;
  for (const std::string& dns : spec.dns_names) {
    names.push_back(absl::StrCat("DNS:", dns));
  }
  for (const std::string& ip : spec.ips) {
    names.push_back(absl::StrCat("IP:", ip));
  }
  for (const std::string& uri : spec.uris) {
    names.push_back(absl::StrCat("URI:", uri));
  }
  if (!names.empty()) {
    ok = ok &&
         AddExtension(cert.get(), signer_cert, NID_subject_alt_name, absl::StrJoin(names, ","));
  }
  ok = ok && AddExtension(cert.get(), signer_cert, NID_subject_key_identifier, "hash");
  if (issuer != nullptr) {
    ok = ok && AddExtension(cert.get(), signer_cert, NID_authority_key_identifier, "keyid:always");
  }
  if (!spec.crl_url.empty()) {
    ok = ok && AddExtension(cert.get(), signer_cert, NID_crl_distribution_points,
                            absl::StrCat("URI:", spec.crl_url));
  }
  if (!ok) {
    return Fail(absl::StrCat("cannot add the extensions of \"", spec.common_name, "\""));
  }
  if (!X509_sign(cert.get(), signer_key, DigestFor(signer_key))) {
    return Fail("cannot sign the certificate");
  }
  return MintedCert{std::move(cert), *std::move(key)};
}

absl::StatusOr<std::string> CertificateToPem(X509* cert) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || !PEM_write_bio_X509(bio.get(), cert)) {
    return Fail("cannot write the certificate as PEM");
  }
  return BioContents(bio.get());
}

absl::StatusOr<std::string> PrivateKeyToPem(EVP_PKEY* key, absl::string_view password) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr) {
    return Fail("cannot allocate a BIO");
  }
  std::string pass(password);
  const EVP_CIPHER* cipher = password.empty() ? nullptr : EVP_aes_256_cbc();
  if (!PEM_write_bio_PKCS8PrivateKey(bio.get(), key, cipher,
                                     password.empty() ? nullptr : pass.data(),
                                     static_cast<int>(pass.size()), nullptr, nullptr)) {
    return Fail("cannot write the private key as PEM");
  }
  return BioContents(bio.get());
}

absl::StatusOr<std::string> MintCrl(const MintedCert& issuer,
                                    const std::vector<RevokedCert>& revoked, absl::Time this_update,
                                    absl::Time next_update) {
  bssl::UniquePtr<X509_CRL> crl(X509_CRL_new());
  bssl::UniquePtr<ASN1_TIME> last(ASN1_TIME_set(nullptr, absl::ToTimeT(this_update)));
  bssl::UniquePtr<ASN1_TIME> next(ASN1_TIME_set(nullptr, absl::ToTimeT(next_update)));
  if (crl == nullptr || last == nullptr || next == nullptr ||
      !X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) ||
      !X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(issuer.cert.get())) ||
      !X509_CRL_set1_lastUpdate(crl.get(), last.get()) ||
      !X509_CRL_set1_nextUpdate(crl.get(), next.get())) {
    return Fail("cannot create the CRL");
  }
  for (const RevokedCert& entry : revoked) {
    bssl::UniquePtr<X509_REVOKED> rev(X509_REVOKED_new());
    bssl::UniquePtr<ASN1_TIME> when(ASN1_TIME_set(nullptr, absl::ToTimeT(entry.revoked_at)));
    if (rev == nullptr || when == nullptr ||
        !X509_REVOKED_set_serialNumber(rev.get(), X509_get0_serialNumber(entry.cert)) ||
        !X509_REVOKED_set_revocationDate(rev.get(), when.get()) ||
        !X509_CRL_add0_revoked(crl.get(), rev.get())) {
      return Fail("cannot add a revoked certificate to the CRL");
    }
    static_cast<void>(rev.release());  // owned by the CRL now
  }
  if (!X509_CRL_sort(crl.get()) ||
      !X509_CRL_sign(crl.get(), issuer.key.get(), DigestFor(issuer.key.get()))) {
    return Fail("cannot sign the CRL");
  }
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || !PEM_write_bio_X509_CRL(bio.get(), crl.get())) {
    return Fail("cannot write the CRL as PEM");
  }
  return BioContents(bio.get());
}

absl::StatusOr<std::string> MintLegacyPkcs12(X509* cert, EVP_PKEY* key,
                                             const std::vector<X509*>& chain,
                                             absl::string_view password) {
  bssl::UniquePtr<STACK_OF(X509)> stack(sk_X509_new_null());
  if (stack == nullptr) {
    return Fail("cannot allocate the chain");
  }
  for (X509* c : chain) {
    if (!bssl::PushToStack(stack.get(), bssl::UpRef(c))) {
      return Fail("cannot build the chain");
    }
  }
  const std::string pass(password);
  bssl::UniquePtr<PKCS12> p12(
      PKCS12_create(pass.c_str(), "stella", key, cert, stack.get(), 0, 0, 0, 0, 0));
  if (p12 == nullptr) {
    return Fail("PKCS12_create failed");
  }
  uint8_t* der = nullptr;
  const int len = i2d_PKCS12(p12.get(), &der);
  if (len <= 0) {
    return Fail("cannot encode the PKCS#12 file");
  }
  std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

}  // namespace stella::runtime::tls
