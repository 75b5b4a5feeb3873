#ifndef EXPERTD_BASE_STATUS_MACROS_H_
#define EXPERTD_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Abseil 20220623 ships no public status macros; these are the usual two.

#define EXPERTD_CONCAT_INNER_(a, b) a##b
#define EXPERTD_CONCAT_(a, b) EXPERTD_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status _status = (expr);           \
    if (!_status.ok()) return _status;         \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL_(lhs, expr, tmp) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(*tmp)

#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL_(lhs, expr, EXPERTD_CONCAT_(status_or_, __LINE__))

#endif  // EXPERTD_BASE_STATUS_MACROS_H_
