#ifndef EXPERTD_ENGINE_SAFETENSORS_H_
#define EXPERTD_ENGINE_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace expertd {

// Element types a safetensors file can declare. Only F32, BF16 and F16 are
// usable as weights; the rest are parsed so a file with them is reported
// clearly rather than rejected as corrupt.
enum class TensorDtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

const char* TensorDtypeName(TensorDtype dtype);
size_t TensorDtypeSize(TensorDtype dtype);

// A tensor inside a mapped file: its bytes stay owned by the file.
struct TensorView {
  std::string name;
  TensorDtype dtype = TensorDtype::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t size_bytes = 0;

  int64_t num_elements() const;
};

// RAII read-only memory map of a whole file.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const std::byte* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const std::byte* data_;
  size_t size_;
};

// One .safetensors file: an 8-byte little-endian header length, a JSON header
// mapping tensor names to {dtype, shape, data_offsets}, then the data. Open()
// validates everything a later read relies on: header bounds, known dtypes,
// shape products matching byte ranges, ranges inside the file, and no
// overlapping tensors, so a truncated or corrupt file fails here, not at use.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  // Null when absent.
  const TensorView* Find(const std::string& name) const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The raw JSON header and the file's size: enough to fingerprint it.
  absl::string_view header_json() const { return header_json_; }
  size_t file_size() const { return file_->size(); }
  absl::string_view file_bytes() const {
    return absl::string_view(reinterpret_cast<const char*>(file_->data()), file_->size());
  }

 private:
  SafetensorsFile() = default;
  absl::string_view header_json_;
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file from tensors given as raw little-endian bytes.
// Tensors are laid out in name order, data 8-byte aligned as HF does it.
struct TensorToWrite {
  std::string name;
  TensorDtype dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace expertd

#endif  // EXPERTD_ENGINE_SAFETENSORS_H_
