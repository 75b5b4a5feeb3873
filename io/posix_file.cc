#include "io/posix_file.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace expertd::io {

void UniqueFd::Reset() {
  if (fd_ >= 0) {
    // close(2) errors on a read-only descriptor carry no information we can
    // act on; the descriptor is released either way.
    ::close(fd_);
    fd_ = -1;
  }
}

absl::StatusOr<OpenedFile> OpenForRead(const std::string& path, bool direct_io) {
  return OpenForRead(path, direct_io, [](const char* p, int flags) { return ::open(p, flags); });
}

absl::StatusOr<OpenedFile> OpenForRead(const std::string& path, bool direct_io, OpenFn open_fn) {
  OpenedFile file;
  if (direct_io) {
    int fd = open_fn(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (fd >= 0) {
      file.fd = UniqueFd(fd);
      file.direct_io = true;
      return file;
    }
    if (errno != EINVAL) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path, " for reading"));
    }
    spdlog::warn("{}: the filesystem refuses O_DIRECT (EINVAL); reading through the page cache instead", path);
  }
  int fd = open_fn(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path, " for reading"));
  }
  file.fd = UniqueFd(fd);
  return file;
}

absl::Status ReadErrorStatus(absl::string_view path, uint64_t offset, uint64_t length, int error_number) {
  return absl::ErrnoToStatus(error_number,
                             absl::StrCat(path, ": read of ", length, " bytes at offset ", offset, " failed"));
}

absl::Status UnexpectedEofStatus(absl::string_view path, uint64_t offset, uint64_t length, uint64_t eof_offset,
                                 uint64_t missing_bytes) {
  return absl::DataLossError(absl::StrCat(path, ": unexpected end of file at offset ", eof_offset, " while reading ",
                                          length, " bytes at offset ", offset, " (", missing_bytes,
                                          " bytes missing); the file is truncated or its index is wrong"));
}

absl::Status CheckDirectAlignment(absl::string_view path, bool direct_io, uint64_t offset, uint64_t length,
                                  const void* dest) {
  if (!direct_io) return absl::OkStatus();
  if (offset % kDirectIoAlignment != 0 || length % kDirectIoAlignment != 0 ||
      reinterpret_cast<uintptr_t>(dest) % kDirectIoAlignment != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": O_DIRECT read of ", length, " bytes at offset ", offset,
                                                   " into 0x", absl::Hex(reinterpret_cast<uintptr_t>(dest)), " is not aligned to ", kDirectIoAlignment,
                                                   " bytes (offset, length and destination must be)"));
  }
  return absl::OkStatus();
}

void SetCurrentThreadName(const char* name) { ::pthread_setname_np(::pthread_self(), name); }

}  // namespace expertd::io
