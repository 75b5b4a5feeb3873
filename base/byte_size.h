#ifndef EXPERTD_BASE_BYTE_SIZE_H_
#define EXPERTD_BASE_BYTE_SIZE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace expertd {

// Parses "1048576", "512MiB", "6GiB", "1.5GB", "64k" (case-insensitive; K/M/G/T
// with "iB" are powers of 1024, with "B" powers of 1000, bare letters 1024).
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);
// 805306368 -> "768.0 MiB".
std::string FormatByteSize(uint64_t bytes);

}  // namespace expertd

#endif  // EXPERTD_BASE_BYTE_SIZE_H_
