// Early-return helpers for absl::Status, used across Stella's modules.
#ifndef STELLA_RUNTIME_STATUS_MACROS_H_
#define STELLA_RUNTIME_STATUS_MACROS_H_

#include "absl/status/status.h"

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if it is not OK.
#define STELLA_RETURN_IF_ERROR(expr)        \
  do {                                      \
    ::absl::Status stella_status_ = (expr); \
    if (!stella_status_.ok()) {             \
      return stella_status_;                \
    }                                       \
  } while (false)

#endif  // STELLA_RUNTIME_STATUS_MACROS_H_
