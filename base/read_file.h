#ifndef EXPERTD_BASE_READ_FILE_H_
#define EXPERTD_BASE_READ_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace expertd {

// The whole of a small file (a config, a tokenizer), refusing one larger than
// max_bytes. What the file is does not matter to the cap: it reads at most
// max_bytes + 1 bytes, so a character device (/dev/zero), a FIFO or a file
// that grows while it is read fails instead of filling memory. `what` names
// the file in errors ("config", "tokenizer.json"), which also name the path
// and the cap: NotFound when it cannot be opened, InvalidArgument when it is
// too large or a directory, DataLoss on a read error.
absl::StatusOr<std::string> ReadFileCapped(const std::string& path, uint64_t max_bytes, absl::string_view what);

}  // namespace expertd

#endif  // EXPERTD_BASE_READ_FILE_H_
