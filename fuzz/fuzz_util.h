#ifndef EXPERTD_FUZZ_FUZZ_UTIL_H_
#define EXPERTD_FUZZ_FUZZ_UTIL_H_

// What the fuzz targets share: an invariant check that stops the run (a
// failed check is a finding, like a crash), and an in-memory file for the
// parsers that only take a path.

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

// Stops the fuzzer with the failed invariant; libFuzzer saves the input.
#define FUZZ_CHECK(condition)                                                            \
  do {                                                                                   \
    if (!(condition)) {                                                                  \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (false)

namespace expertd::fuzz {

// One memfd the whole run, rewritten per input and opened by path
// (/proc/self/fd/N) by code that wants a file: no disk I/O, nothing left
// behind, and the parser sees an ordinary regular file (fstat, pread, mmap).
class MemoryFile {
 public:
  MemoryFile() : fd_(::memfd_create("expertd-fuzz", MFD_CLOEXEC)) {
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemoryFile() { ::close(fd_); }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  // Replaces the contents with `bytes`; returns the path to open.
  const std::string& Write(const uint8_t* bytes, size_t size) {
    FUZZ_CHECK(::ftruncate(fd_, 0) == 0);
    size_t written = 0;
    while (written < size) {
      const ssize_t n = ::pwrite(fd_, bytes + written, size - written, static_cast<off_t>(written));
      FUZZ_CHECK(n > 0);
      written += static_cast<size_t>(n);
    }
    return path_;
  }

 private:
  int fd_;
  std::string path_;
};

}  // namespace expertd::fuzz

#endif  // EXPERTD_FUZZ_FUZZ_UTIL_H_
