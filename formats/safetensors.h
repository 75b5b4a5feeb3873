#ifndef EXPERTD_FORMATS_SAFETENSORS_H_
#define EXPERTD_FORMATS_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/dtype.h"
#include "io/posix_file.h"

namespace expertd::formats {

// The dtype tag of a tensor in a safetensors file: every tag the format
// defines, so a file with an integer or bool tensor is reported clearly
// rather than rejected as corrupt. Only F32, BF16 and F16 are usable as
// weights; WeightDType is where a tag becomes the element type (DType) the
// rest of expertd uses.
enum class SafetensorsDtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

const char* SafetensorsDtypeName(SafetensorsDtype dtype);
size_t SafetensorsDtypeSize(SafetensorsDtype dtype);
// The weight element type a tag holds; nullopt for tags that cannot be
// weights (F64, the integers, BOOL).
std::optional<DType> WeightDType(SafetensorsDtype dtype);

// Where a tensor's bytes lie in its file. The bytes themselves are not held:
// SafetensorsFile::Read copies them out.
struct TensorInfo {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // of the first byte, from the start of the file
  size_t size_bytes = 0;

  int64_t num_elements() const;
};

// One .safetensors file: an 8-byte little-endian header length, a JSON header
// mapping tensor names to {dtype, shape, data_offsets}, then the data. Open()
// reads the header and validates everything a later read relies on: header
// bounds, known dtypes, shape products matching byte ranges, ranges inside
// the file, and no overlapping tensors, so a truncated or corrupt file fails
// there, not at use.
//
// The file is held open by a descriptor and read with pread, never mapped:
// through a mapping, a file truncated by someone else kills the process with
// SIGBUS at the next touch of a lost page, and bytes rewritten in place
// change the weights under a running model. A read instead returns an error
// the caller can report, and what it copied out stays as it was.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return path_; }
  // Null when absent.
  const TensorInfo* Find(const std::string& name) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The raw JSON header and the file's size, as Open found them: with a few
  // sampled windows, enough to fingerprint the file.
  const std::string& header_json() const { return header_json_; }
  uint64_t file_size() const { return file_size_; }

  // Copies bytes [offset, offset + out.size()) of the file into out. An
  // error names the file and the offset: DataLoss when the file ends first
  // (truncated since Open), the errno's code when the read fails, and
  // OutOfRange for a range beyond the size Open saw. Thread-safe.
  absl::Status ReadAt(uint64_t offset, absl::Span<std::byte> out) const;
  // The tensor's bytes into out[0, tensor.size_bytes).
  absl::Status Read(const TensorInfo& tensor, std::byte* out) const {
    return ReadAt(tensor.offset, absl::MakeSpan(out, tensor.size_bytes));
  }
  // Aborted, naming the file, when its size or modification time is no
  // longer what Open saw: it was rewritten or truncated, so bytes read before
  // and after the change may not belong to one model.
  absl::Status CheckUnchanged() const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  io::UniqueFd fd_;
  uint64_t file_size_ = 0;
  timespec modified_{};  // st_mtim at Open
  std::string header_json_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file from tensors given as raw little-endian bytes.
// Tensors are laid out in name order, data 8-byte aligned as HF does it.
struct TensorToWrite {
  std::string name;
  SafetensorsDtype dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace expertd::formats

#endif  // EXPERTD_FORMATS_SAFETENSORS_H_
