// Include this before any other OpenSSL-API header in Stella code. It fails the build unless the
// headers on the include path are BoringSSL's: OpenSSL 3 headers compiled against the BoringSSL
// libraries (or both libraries in one process) resolve symbols across the two and crash at run
// time, which is far harder to diagnose than this error.
#ifndef STELLA_RUNTIME_BORINGSSL_H_
#define STELLA_RUNTIME_BORINGSSL_H_

#include <openssl/crypto.h>

#ifndef OPENSSL_IS_BORINGSSL
#error \
    "Stella Router needs BoringSSL, but these OpenSSL headers are not BoringSSL's: OPENSSL_IS_BORINGSSL is not defined. Install android-libboringssl-dev or pass -DBORINGSSL_ROOT=<your BoringSSL>, and make sure no OpenSSL 3 include path comes first."
#endif

#endif  // STELLA_RUNTIME_BORINGSSL_H_
