#ifndef EXPERTD_IO_ALIGNED_BUFFER_H_
#define EXPERTD_IO_ALIGNED_BUFFER_H_

#include <cstddef>

#include "absl/status/statusor.h"

namespace expertd::io {

// Page-aligned anonymous memory (mmap), suitable as O_DIRECT read targets and
// io_uring registered buffers. Move-only; unmapped on destruction.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  static absl::StatusOr<AlignedBuffer> Allocate(size_t bytes);
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace expertd::io

#endif  // EXPERTD_IO_ALIGNED_BUFFER_H_
