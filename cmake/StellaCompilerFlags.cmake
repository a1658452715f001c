# Warning and sanitizer flags shared by every Stella target (applied directory-wide from the top
# level so generated protobuf code gets the same sanitizer instrumentation as ours).

add_compile_options(-Wall -Wextra)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC 12 reports Asio's coroutine frame allocator as mismatched new/delete (a false positive of
  # its coroutine support, GCC PR 105426-style); it is correct: Asio pairs its own operators.
  add_compile_options(-Wno-mismatched-new-delete)
  # And at -O2 it reports absl::StatusOr's union members carried through Asio's co_spawn binders
  # as "maybe uninitialized"; clang (the fuzz build) and the sanitizers check the real thing.
  add_compile_options(-Wno-maybe-uninitialized)
endif()
if(STELLA_WERROR)
  add_compile_options(-Werror)
endif()

if(STELLA_SANITIZE STREQUAL "address")
  # ASan and UBSan together: the pair CI runs. UBSan findings abort so a test fails on them.
  set(_stella_san -fsanitize=address,undefined -fno-sanitize-recover=undefined
                  -fno-omit-frame-pointer)
elseif(STELLA_SANITIZE STREQUAL "thread")
  set(_stella_san -fsanitize=thread -fno-omit-frame-pointer)
  # GCC warns that TSan does not model atomic_thread_fence, which Asio's handler dispatch uses;
  # the warning is about Asio's headers, not our code, and -Werror would turn it into a failure.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    add_compile_options(-Wno-tsan)
  endif()
elseif(STELLA_SANITIZE STREQUAL "undefined")
  set(_stella_san -fsanitize=undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
elseif(NOT STELLA_SANITIZE STREQUAL "")
  message(FATAL_ERROR "STELLA_SANITIZE=${STELLA_SANITIZE}: expected address, thread or undefined")
endif()
if(_stella_san)
  # -O1 -g1 after the build type's -O2 -g (the last one wins): the optimisation level the
  # sanitizers recommend, and line tables for their stack traces. It halves the compile time of
  # an Asio translation unit under ASan+UBSan, which is what CI's budget is spent on.
  add_compile_options(${_stella_san} -O1 -g1)
  add_link_options(${_stella_san})
endif()

if(STELLA_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "STELLA_FUZZ=ON needs clang (libFuzzer): configure with "
                        "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang")
  endif()
  # Coverage instrumentation for all our code (the fuzzer binaries add the libFuzzer driver),
  # with ASan+UBSan so that memory errors surface as crashes.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
