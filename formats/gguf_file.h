#ifndef EXPERTD_FORMATS_GGUF_FILE_H_
#define EXPERTD_FORMATS_GGUF_FILE_H_

// A GGUF file (llama.cpp's model format, versions 2 and 3), mapped and
// parsed: the header, the metadata key/values, the tensor infos, and each
// tensor's bytes as a span into the mapping. formats/README.md has the layout.
//
// Open checks everything a later access relies on, so a truncated or corrupt
// file fails there, with an error naming the file, the key or tensor and the
// byte offset: every length and count fits in the file, tensor dimensions do
// not overflow and a row is whole blocks of its type, each tensor's offset is
// a multiple of the alignment and its bytes lie inside the file without
// overlapping another's, and no key or tensor name appears twice. A tensor of
// a type expertd cannot compute with is accepted (its extent is still
// checked) and refused only when used (Weight).
//
// Strings and arrays of numbers are views into the mapping, valid while the
// GgufFile lives; nothing is copied but the index.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/dtype.h"
#include "formats/ggml_type.h"
#include "formats/mapped_file.h"

namespace expertd::formats {

// The type tag of a metadata value (GGUF's gguf_type; the ids are the format).
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// "uint8" … "float64", "string", "array"; "type <id>" for an id GGUF does not
// define.
std::string GgufValueTypeName(GgufValueType type);
bool IsGgufInteger(GgufValueType type);

class GgufArray;

// One metadata value. The As* conversions fail with InvalidArgument saying
// what the value is and what was wanted; GgufFile's Get* add the key and file.
class GgufValue {
 public:
  // A number or bool from its little-endian bytes (`type` is neither string
  // nor array); `bytes` holds the type's width.
  static GgufValue Scalar(GgufValueType type, const std::byte* bytes);
  static GgufValue String(std::string_view text);
  static GgufValue Array(std::shared_ptr<const GgufArray> array);

  GgufValueType type() const { return type_; }

  // Any integer type whose value T can hold: a uint8 1 is an int32 1, an
  // int64 -1 is not a uint32.
  template <typename T>
  absl::StatusOr<T> AsInteger() const;
  // float32; a float64 whose value a float can hold (finite, in range).
  absl::StatusOr<float> AsFloat32() const;
  // float32 or float64.
  absl::StatusOr<double> AsFloat64() const;
  absl::StatusOr<bool> AsBool() const;
  absl::StatusOr<std::string_view> AsString() const;
  absl::StatusOr<const GgufArray*> AsArray() const;

  // "uint32 7", "string \"abc\"" (shortened), "array of 3 string": for messages.
  std::string Describe() const;

 private:
  GgufValueType type_ = GgufValueType::kUint8;
  uint64_t bits_ = 0;  // a number or bool: its bytes, zero-extended
  std::string_view string_;
  std::shared_ptr<const GgufArray> array_;
};

// An array value: `size()` elements of one type. Numbers stay as their bytes
// in the file and are decoded by Element; strings are views; nested arrays
// are values of their own.
class GgufArray {
 public:
  GgufArray(GgufValueType element_type, uint64_t size, absl::Span<const std::byte> scalar_bytes,
            std::vector<std::string_view> strings, std::vector<GgufValue> arrays)
      : element_type_(element_type),
        size_(size),
        scalar_bytes_(scalar_bytes),
        strings_(std::move(strings)),
        arrays_(std::move(arrays)) {}

  GgufValueType element_type() const { return element_type_; }
  uint64_t size() const { return size_; }
  // Element i (< size()) as a value of its own.
  GgufValue Element(uint64_t i) const;
  // The elements of an array of strings (empty for other element types).
  absl::Span<const std::string_view> strings() const { return strings_; }

 private:
  GgufValueType element_type_;
  uint64_t size_;
  absl::Span<const std::byte> scalar_bytes_;  // numbers and bools: size × width
  std::vector<std::string_view> strings_;     // strings
  std::vector<GgufValue> arrays_;             // arrays of arrays
};

// Where a tensor is and what it holds. GGUF lists dimensions fastest-varying
// first (GGML's ne[0] is a row's length): a row-major [rows][cols] matrix has
// dims {cols, rows}, and a stack of experts [experts][rows][cols] has dims
// {cols, rows, experts}.
struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> dims;  // GGUF order; none for a scalar
  int64_t cols = 1;           // dims[0]
  int64_t rows = 1;           // the product of the other dims
  int64_t num_elements = 1;
  uint64_t offset = 0;       // from the start of the data section, as stored
  uint64_t file_offset = 0;  // from the start of the file
  uint64_t size_bytes = 0;

  // Row-major (PyTorch, safetensors) order: dims reversed.
  std::vector<int64_t> shape() const { return {dims.rbegin(), dims.rend()}; }
};

// A tensor expertd can compute with: its element type, as a row-major
// matrix (a stack of matrices has rows = experts × rows), and its bytes.
struct GgufWeight {
  const GgufTensorInfo* info = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  absl::Span<const std::byte> bytes;
};

// The alignment of tensor data when general.alignment is absent.
inline constexpr uint64_t kGgufDefaultAlignment = 32;
// Arrays of arrays deeper than this are refused: real files nest at most
// once, and the parser recurses per level.
inline constexpr int kGgufMaxArrayDepth = 16;
// GGML's limit on a tensor's dimensions (GGML_MAX_DIMS).
inline constexpr uint32_t kGgufMaxDims = 4;

class GgufFile {
 public:
  // Maps and parses `path`. NotFound when it cannot be opened; Unimplemented
  // for version 1, big-endian files and versions after 3; DataLoss for
  // anything malformed.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return file_.bytes().size(); }
  // The whole file as mapped.
  absl::Span<const std::byte> bytes() const { return file_.bytes(); }
  uint64_t alignment() const { return alignment_; }
  // Where the data section starts: the end of the tensor infos, rounded up
  // to the alignment.
  uint64_t data_offset() const { return data_offset_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string_view, GgufValue>>& metadata() const { return metadata_; }
  // Null when absent.
  const GgufValue* Find(std::string_view key) const;
  bool Has(std::string_view key) const { return Find(key) != nullptr; }

  // The value of `key` as a type: NotFound when the key is absent,
  // InvalidArgument when its value is another type (naming both) or an
  // integer out of the wanted type's range.
  absl::StatusOr<std::string_view> GetString(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<uint32_t> GetUint32(std::string_view key) const;
  absl::StatusOr<int32_t> GetInt32(std::string_view key) const;
  absl::StatusOr<uint64_t> GetUint64(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt64(std::string_view key) const;
  absl::StatusOr<float> GetFloat32(std::string_view key) const;
  absl::StatusOr<double> GetFloat64(std::string_view key) const;
  absl::StatusOr<const GgufArray*> GetArray(std::string_view key) const;
  // Arrays of a kind: the element type is checked as the scalar accessors
  // check a value (an array of uint8 is an array of int32), naming the first
  // element that does not fit.
  absl::StatusOr<absl::Span<const std::string_view>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<int32_t>> GetInt32Array(std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetInt64Array(std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloat32Array(std::string_view key) const;

  // Tensors in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  // Null when absent.
  const GgufTensorInfo* FindTensor(std::string_view name) const;
  // A tensor's bytes in the mapping (its extent was checked by Open).
  absl::Span<const std::byte> TensorData(const GgufTensorInfo& tensor) const {
    return file_.bytes().subspan(tensor.file_offset, tensor.size_bytes);
  }
  // The tensor `name` as a weight: NotFound when absent, Unimplemented
  // naming tensor and type when expertd cannot compute with its type.
  absl::StatusOr<GgufWeight> Weight(std::string_view name) const;

 private:
  friend class GgufParser;
  GgufFile() = default;

  template <typename T>
  absl::StatusOr<T> GetInteger(std::string_view key) const;
  template <typename T>
  absl::StatusOr<std::vector<T>> GetIntegerArray(std::string_view key) const;
  absl::StatusOr<const GgufValue*> Require(std::string_view key) const;
  absl::Status KeyError(std::string_view key, const absl::Status& status) const;

  MappedFile file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string_view, GgufValue>> metadata_;
  absl::flat_hash_map<absl::string_view, size_t> metadata_index_;  // views of the keys in the mapping
  std::vector<GgufTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

}  // namespace expertd::formats

#endif  // EXPERTD_FORMATS_GGUF_FILE_H_
