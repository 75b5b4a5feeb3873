#ifndef EXPERTD_FORMATS_MAPPED_FILE_H_
#define EXPERTD_FORMATS_MAPPED_FILE_H_

// A whole file mapped read-only, unmapped by the destructor. The descriptor
// is closed once the mapping exists (the mapping keeps the file alive).
//
// A mapping shares the file's fate: if someone truncates the file while it is
// mapped, touching a lost page kills the process with SIGBUS, and bytes
// rewritten in place change what the mapping shows. Writing a new file and
// renaming it over the old path is safe (the mapping keeps the old inode);
// converting again onto the path of a file in use is not (llama.cpp's
// converter truncates its output in place). Readers that must survive that
// copy out with pread instead (engine/safetensors.h); a weight loader built
// on this decides whether to copy tensors out at load.

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace expertd::formats {

class MappedFile {
 public:
  // NotFound when the file cannot be opened, InvalidArgument when it is not
  // a regular file, the errno's code when mmap fails; each names the path.
  // An empty file maps to an empty span (mmap refuses length 0).
  static absl::StatusOr<MappedFile> Open(const std::string& path);

  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  absl::Span<const std::byte> bytes() const { return {data_, size_}; }

 private:
  void Unmap();

  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace expertd::formats

#endif  // EXPERTD_FORMATS_MAPPED_FILE_H_
