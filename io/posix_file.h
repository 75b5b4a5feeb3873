#ifndef EXPERTD_IO_POSIX_FILE_H_
#define EXPERTD_IO_POSIX_FILE_H_

// Internals shared by the readers and the file format: an owned file
// descriptor, opening for reads with an O_DIRECT fallback, and the wording of
// read errors (so every reader names file and offset the same way).

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace expertd::io {

// The alignment O_DIRECT reads need here: the cache's slots and the packed
// file's bundles are laid out on 4 KiB boundaries (DESIGN.md §2).
inline constexpr uint64_t kDirectIoAlignment = 4096;

// Owns one file descriptor; closes it on destruction. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = other.Release();
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset();

 private:
  int fd_ = -1;
};

struct OpenedFile {
  UniqueFd fd;
  bool direct_io = false;  // whether O_DIRECT is actually in effect
};

// Opens `path` read-only. With `direct_io`, asks for O_DIRECT; a filesystem
// that refuses it (EINVAL, e.g. tmpfs) gets buffered I/O and one warning,
// because a slower read beats no read.
absl::StatusOr<OpenedFile> OpenForRead(const std::string& path, bool direct_io);
// The same with open(2) replaced, so tests can play a filesystem that refuses
// O_DIRECT (tmpfs accepts it since Linux 6.6). `open_fn` sets errno on failure.
using OpenFn = int (*)(const char* path, int flags);
absl::StatusOr<OpenedFile> OpenForRead(const std::string& path, bool direct_io, OpenFn open_fn);

// "<path>: read of <length> bytes at offset <offset> failed: <strerror>",
// with the errno's status code.
absl::Status ReadErrorStatus(absl::string_view path, uint64_t offset, uint64_t length, int error_number);
// DataLoss for a read that found the end of the file at `eof_offset` while
// `missing_bytes` of the request at `offset` were still to come.
absl::Status UnexpectedEofStatus(absl::string_view path, uint64_t offset, uint64_t length, uint64_t eof_offset,
                                 uint64_t missing_bytes);
// InvalidArgument when an O_DIRECT request is not 4 KiB aligned; OK otherwise.
absl::Status CheckDirectAlignment(absl::string_view path, bool direct_io, uint64_t offset, uint64_t length,
                                  const void* dest);

// Names the calling thread (visible in top/gdb); Linux truncates to 15 chars.
void SetCurrentThreadName(const char* name);

}  // namespace expertd::io

#endif  // EXPERTD_IO_POSIX_FILE_H_
