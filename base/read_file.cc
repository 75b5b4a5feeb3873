#include "base/read_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/byte_size.h"

namespace expertd {
namespace {

// Closes the descriptor on every return path.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  ~FdCloser() { ::close(fd_); }

 private:
  int fd_;
};

// Bytes asked of each read(2): big enough that a file at the cap takes few
// calls, small enough that an endless device never gets a large buffer
// beyond the cap.
constexpr size_t kReadBytes = 64 * 1024;

absl::Status TooLarge(const std::string& path, uint64_t max_bytes, absl::string_view what, absl::string_view detail) {
  return absl::InvalidArgumentError(absl::StrCat(what, " ", path, " is larger than the cap of ",
                                                 FormatByteSize(max_bytes), " (", max_bytes, " bytes)", detail));
}

}  // namespace

absl::StatusOr<std::string> ReadFileCapped(const std::string& path, uint64_t max_bytes, absl::string_view what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::NotFoundError(absl::StrCat("cannot open ", what, " ", path, ": ", std::strerror(err)));
  }
  FdCloser closer(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    return absl::DataLossError(absl::StrCat("cannot stat ", what, " ", path, ": ", std::strerror(err)));
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, " is a directory, not a file"));
  }
  // A regular file's size is known before reading: refuse it at once. The
  // read below still stops at the cap, for files of any other kind and for
  // one that grows meanwhile.
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > max_bytes) {
    return TooLarge(path, max_bytes, what, absl::StrCat(": it holds ", st.st_size, " bytes"));
  }
  // One byte past the cap is enough to know the file is too large.
  const uint64_t limit = max_bytes == std::numeric_limits<uint64_t>::max() ? max_bytes : max_bytes + 1;
  std::string text;
  if (S_ISREG(st.st_mode)) text.reserve(static_cast<size_t>(st.st_size));
  while (text.size() < limit) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kReadBytes, limit - text.size()));
    const size_t old_size = text.size();
    text.resize(old_size + want);
    const ssize_t got = ::read(fd, text.data() + old_size, want);
    if (got < 0) {
      const int err = errno;
      text.resize(old_size);
      if (err == EINTR) continue;
      return absl::DataLossError(absl::StrCat("cannot read ", what, " ", path, ": ", std::strerror(err)));
    }
    text.resize(old_size + static_cast<size_t>(got));
    if (got == 0) return text;
  }
  return TooLarge(path, max_bytes, what, ": reading stopped there");
}

}  // namespace expertd
