# FindBoringSSL
# -------------
# Finds BoringSSL and defines the imported targets BoringSSL::ssl and BoringSSL::crypto.
#
# By default it finds Debian's android-libboringssl-dev: headers in /usr/include/android and the
# libraries libssl.so.0 / libcrypto.so.0 in /usr/lib/<multiarch>/android. Set BORINGSSL_ROOT to
# the install prefix (or build tree) of your own BoringSSL to use that instead; it must contain
# include/openssl/base.h and lib/libssl.* / lib/libcrypto.* (or ssl/ and crypto/ in a build tree).
#
# OpenSSL 3 is never searched for: a process that links both resolves symbols across the two and
# crashes. The configure step verifies that the headers found really are BoringSSL's.
#
# Result variables: BoringSSL_FOUND, BoringSSL_INCLUDE_DIR, BoringSSL_SSL_LIBRARY,
# BoringSSL_CRYPTO_LIBRARY, BoringSSL_LIBRARY_DIR.

include(FindPackageHandleStandardArgs)

set(BORINGSSL_ROOT "${BORINGSSL_ROOT}" CACHE PATH "Prefix of a BoringSSL install or build tree")

if(BORINGSSL_ROOT)
  set(_bssl_include_hints "${BORINGSSL_ROOT}/include")
  set(_bssl_lib_hints "${BORINGSSL_ROOT}/lib" "${BORINGSSL_ROOT}/lib64" "${BORINGSSL_ROOT}"
                      "${BORINGSSL_ROOT}/ssl" "${BORINGSSL_ROOT}/crypto")
  set(_bssl_search NO_DEFAULT_PATH)
else()
  set(_bssl_include_hints /usr/include/android)
  set(_bssl_lib_hints)
  if(CMAKE_LIBRARY_ARCHITECTURE)
    list(APPEND _bssl_lib_hints "/usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/android")
  endif()
  # Debian's libraries live beside the system's OpenSSL ones under other names; never fall back to
  # the default search path, which would find OpenSSL 3's libssl.so.
  set(_bssl_search NO_DEFAULT_PATH)
endif()

find_path(BoringSSL_INCLUDE_DIR NAMES openssl/base.h HINTS ${_bssl_include_hints} ${_bssl_search})
# Debian ships only the versioned .so.0 plus a dev symlink; accept either.
find_library(BoringSSL_SSL_LIBRARY NAMES ssl libssl.so.0 HINTS ${_bssl_lib_hints} ${_bssl_search})
find_library(BoringSSL_CRYPTO_LIBRARY NAMES crypto libcrypto.so.0 HINTS ${_bssl_lib_hints}
             ${_bssl_search})

if(BoringSSL_INCLUDE_DIR AND EXISTS "${BoringSSL_INCLUDE_DIR}/openssl/base.h")
  file(STRINGS "${BoringSSL_INCLUDE_DIR}/openssl/base.h" _bssl_marker
       REGEX "#define[ \t]+OPENSSL_IS_BORINGSSL")
  if(NOT _bssl_marker)
    message(FATAL_ERROR "${BoringSSL_INCLUDE_DIR}/openssl/base.h does not define "
                        "OPENSSL_IS_BORINGSSL: these are not BoringSSL headers (OpenSSL 3?). "
                        "Point BORINGSSL_ROOT at a BoringSSL build or install "
                        "android-libboringssl-dev.")
  endif()
endif()

find_package_handle_standard_args(BoringSSL
  REQUIRED_VARS BoringSSL_SSL_LIBRARY BoringSSL_CRYPTO_LIBRARY BoringSSL_INCLUDE_DIR)

if(BoringSSL_FOUND)
  get_filename_component(BoringSSL_LIBRARY_DIR "${BoringSSL_SSL_LIBRARY}" DIRECTORY)
  if(NOT TARGET BoringSSL::crypto)
    add_library(BoringSSL::crypto UNKNOWN IMPORTED)
    set_target_properties(BoringSSL::crypto PROPERTIES
      IMPORTED_LOCATION "${BoringSSL_CRYPTO_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${BoringSSL_INCLUDE_DIR}")
  endif()
  if(NOT TARGET BoringSSL::ssl)
    add_library(BoringSSL::ssl UNKNOWN IMPORTED)
    set_target_properties(BoringSSL::ssl PROPERTIES
      IMPORTED_LOCATION "${BoringSSL_SSL_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${BoringSSL_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES BoringSSL::crypto)
  endif()
endif()

mark_as_advanced(BoringSSL_INCLUDE_DIR BoringSSL_SSL_LIBRARY BoringSSL_CRYPTO_LIBRARY)
