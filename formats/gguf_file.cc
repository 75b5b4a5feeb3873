#include "formats/gguf_file.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace expertd::formats {

// Numbers are read in place from the mapping, which is little-endian in
// every GGUF file this reader accepts.
static_assert(std::endian::native == std::endian::little, "the GGUF reader reads little-endian values in place");

namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;  // magic, version, tensor count, key/value count
// The fewest bytes one key/value and one tensor info take (an empty key and
// a uint8 value; an empty name with no dims): the counts in the header are
// refused when the rest of the file cannot hold that many.
constexpr uint64_t kMinKeyValueBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;

// Bytes of a number or bool; 0 for string, array and ids GGUF does not define.
uint64_t ScalarWidth(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kString:
    case GgufValueType::kArray:
      return 0;
  }
  return 0;
}

bool IsKnownType(uint32_t id) { return id <= static_cast<uint32_t>(GgufValueType::kFloat64); }

// The value of an integer as 128 bits, so every GGUF integer and every
// target type's range compare without wrapping.
__int128 IntegerValue(GgufValueType type, uint64_t bits) {
  switch (type) {
    case GgufValueType::kInt8: return static_cast<int8_t>(bits);
    case GgufValueType::kInt16: return static_cast<int16_t>(bits);
    case GgufValueType::kInt32: return static_cast<int32_t>(bits);
    case GgufValueType::kInt64: return static_cast<int64_t>(bits);
    default: return bits;
  }
}

std::string Int128ToString(__int128 value) {
  if (value < 0) return absl::StrCat("-", static_cast<uint64_t>(-(value + 1)) + 1);
  return absl::StrCat(static_cast<uint64_t>(value));
}

template <typename T>
const char* IntegerTypeName() {
  if constexpr (std::is_same_v<T, uint32_t>) return "uint32";
  if constexpr (std::is_same_v<T, int32_t>) return "int32";
  if constexpr (std::is_same_v<T, uint64_t>) return "uint64";
  return "int64";
}

// Reads the file front to back. Errors say where the file ended or what was
// wrong, and at which byte; the caller adds which key or tensor it was in.
class Cursor {
 public:
  explicit Cursor(absl::Span<const std::byte> bytes) : bytes_(bytes) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return bytes_.size() - pos_; }

  absl::Status Need(uint64_t n, const char* what) const {
    if (n <= left()) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat(what, " at byte ", pos_, " needs ", n, " bytes but the file ends at byte ",
                                            bytes_.size(), " (truncated file?)"));
  }
  const std::byte* Take(uint64_t n) {
    const std::byte* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  template <typename T>
  absl::StatusOr<T> Read(const char* what) {
    RETURN_IF_ERROR(Need(sizeof(T), what));
    T value;
    std::memcpy(&value, Take(sizeof(T)), sizeof(T));
    return value;
  }
  absl::StatusOr<std::string_view> ReadString(const char* what) {
    const uint64_t at = pos_;
    ASSIGN_OR_RETURN(const uint64_t length, Read<uint64_t>(what));
    if (length > left()) {
      return absl::DataLossError(absl::StrCat(what, " at byte ", at, " is ", length, " bytes long but only ", left(),
                                              " bytes of the file follow (truncated or corrupt file?)"));
    }
    return std::string_view(reinterpret_cast<const char*>(Take(length)), length);
  }

 private:
  absl::Span<const std::byte> bytes_;
  uint64_t pos_ = 0;
};

}  // namespace

// Builds a GgufFile from its mapping; a friend, so the file's fields stay
// private to everyone else.
class GgufParser {
 public:
  explicit GgufParser(GgufFile& file) : file_(file), cursor_(file.file_.bytes()) {}

  absl::Status Parse();

 private:
  absl::Status Corrupt(absl::string_view what) const {
    return absl::DataLossError(absl::StrCat(file_.path(), ": not a valid GGUF file: ", what));
  }
  // Prefixes a cursor error with the file and where in it the parser was.
  absl::Status In(const absl::Status& status, absl::string_view where) const {
    return absl::Status(status.code(),
                        absl::StrCat(file_.path(), ": not a valid GGUF file: ", where, ": ", status.message()));
  }
  absl::StatusOr<GgufValue> ReadValue(GgufValueType type, int depth);
  absl::StatusOr<GgufValueType> ReadType(const char* what);
  absl::Status ParseHeader(uint64_t& tensor_count, uint64_t& kv_count);
  absl::Status ParseMetadata(uint64_t kv_count);
  absl::Status ReadAlignment();
  absl::Status ParseTensorInfos(uint64_t tensor_count);
  absl::Status PlaceTensors();

  GgufFile& file_;
  Cursor cursor_;
};

absl::StatusOr<GgufValueType> GgufParser::ReadType(const char* what) {
  const uint64_t at = cursor_.pos();
  ASSIGN_OR_RETURN(const uint32_t id, cursor_.Read<uint32_t>(what));
  if (!IsKnownType(id)) {
    return absl::DataLossError(absl::StrCat(what, " at byte ", at, " is ", id,
                                            ", which is not a GGUF value type (0 .. 12)"));
  }
  return static_cast<GgufValueType>(id);
}

absl::StatusOr<GgufValue> GgufParser::ReadValue(GgufValueType type, int depth) {
  if (type == GgufValueType::kString) {
    ASSIGN_OR_RETURN(const std::string_view text, cursor_.ReadString("a string value's length"));
    return GgufValue::String(text);
  }
  if (type != GgufValueType::kArray) {
    const uint64_t width = ScalarWidth(type);
    RETURN_IF_ERROR(cursor_.Need(width, "a number"));
    return GgufValue::Scalar(type, cursor_.Take(width));
  }
  const uint64_t at = cursor_.pos();
  if (depth >= kGgufMaxArrayDepth) {
    return absl::DataLossError(absl::StrCat("the array at byte ", at, " is nested more than ", kGgufMaxArrayDepth,
                                            " arrays deep"));
  }
  ASSIGN_OR_RETURN(const GgufValueType element_type, ReadType("an array's element type"));
  ASSIGN_OR_RETURN(const uint64_t size, cursor_.Read<uint64_t>("an array's length"));
  // Every element takes at least `min_bytes`, so a count the rest of the
  // file cannot hold is refused before anything is reserved for it.
  const uint64_t width = ScalarWidth(element_type);
  const uint64_t min_bytes = element_type == GgufValueType::kString ? 8
                             : element_type == GgufValueType::kArray ? 4 + 8
                                                                      : width;
  if (size > cursor_.left() / min_bytes) {
    return absl::DataLossError(absl::StrCat("the array at byte ", at, " claims ", size, " elements of ",
                                            GgufValueTypeName(element_type), " but only ", cursor_.left(),
                                            " bytes of the file follow (truncated or corrupt file?)"));
  }
  absl::Span<const std::byte> scalar_bytes;
  std::vector<std::string_view> strings;
  std::vector<GgufValue> arrays;
  if (element_type == GgufValueType::kString) {
    strings.reserve(size);
    for (uint64_t i = 0; i < size; ++i) {
      ASSIGN_OR_RETURN(const std::string_view text, cursor_.ReadString("an array element's string length"));
      strings.push_back(text);
    }
  } else if (element_type == GgufValueType::kArray) {
    arrays.reserve(size);
    for (uint64_t i = 0; i < size; ++i) {
      ASSIGN_OR_RETURN(GgufValue element, ReadValue(GgufValueType::kArray, depth + 1));
      arrays.push_back(std::move(element));
    }
  } else {
    scalar_bytes = absl::MakeConstSpan(cursor_.Take(size * width), size * width);
  }
  return GgufValue::Array(std::make_shared<const GgufArray>(element_type, size, scalar_bytes, std::move(strings),
                                                            std::move(arrays)));
}

absl::Status GgufParser::ParseHeader(uint64_t& tensor_count, uint64_t& kv_count) {
  const auto bytes = file_.file_.bytes();
  if (bytes.size() < 4 || std::memcmp(bytes.data(), kMagic, 4) != 0) {
    return Corrupt("it does not start with the magic bytes \"GGUF\"");
  }
  if (bytes.size() < kHeaderBytes) {
    return Corrupt(absl::StrCat("the file is ", bytes.size(), " bytes long, shorter than the ", kHeaderBytes,
                                "-byte header (magic, version, tensor count, key/value count)"));
  }
  cursor_.Take(4);
  const uint32_t version = *cursor_.Read<uint32_t>("the version");
  if (version == 0x02000000 || version == 0x03000000) {
    return absl::UnimplementedError(absl::StrCat(
        file_.path(), ": a big-endian GGUF file (version ", __builtin_bswap32(version),
        "); expertd reads little-endian GGUF only: convert the model again without --bigendian"));
  }
  if (version == 1) {
    return absl::UnimplementedError(absl::StrCat(
        file_.path(), ": GGUF version 1 (llama.cpp before August 2023) is not supported; expertd reads versions 2 and "
                      "3: convert the model again with a current llama.cpp (convert_hf_to_gguf.py)"));
  }
  if (version != 2 && version != 3) {
    return absl::UnimplementedError(absl::StrCat(file_.path(), ": GGUF version ", version,
                                                 " is not supported; expertd reads versions 2 and 3"));
  }
  file_.version_ = version;
  tensor_count = *cursor_.Read<uint64_t>("the tensor count");
  kv_count = *cursor_.Read<uint64_t>("the key/value count");
  if (kv_count > cursor_.left() / kMinKeyValueBytes) {
    return Corrupt(absl::StrCat("the header (byte 16) claims ", kv_count, " metadata key/values but only ",
                                cursor_.left(), " bytes of the file follow"));
  }
  if (tensor_count > cursor_.left() / kMinTensorInfoBytes) {
    return Corrupt(absl::StrCat("the header (byte 8) claims ", tensor_count, " tensors but only ", cursor_.left(),
                                " bytes of the file follow"));
  }
  return absl::OkStatus();
}

absl::Status GgufParser::ParseMetadata(uint64_t kv_count) {
  file_.metadata_.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    const uint64_t at = cursor_.pos();
    auto key = cursor_.ReadString("the key's length");
    if (!key.ok()) return In(key.status(), absl::StrCat("metadata key/value #", i, " at byte ", at));
    const auto where = [&] { return absl::StrCat("metadata key '", std::string(*key), "' (at byte ", at, ")"); };
    auto type = ReadType("the value type");
    if (!type.ok()) return In(type.status(), where());
    auto value = ReadValue(*type, 0);
    if (!value.ok()) return In(value.status(), where());
    if (!file_.metadata_index_.emplace(absl::string_view(key->data(), key->size()), file_.metadata_.size()).second) {
      return Corrupt(absl::StrCat(where(), " appears twice"));
    }
    file_.metadata_.emplace_back(*key, std::move(*value));
  }
  return absl::OkStatus();
}

absl::Status GgufParser::ReadAlignment() {
  constexpr std::string_view kKey = "general.alignment";
  if (!file_.Has(kKey)) return absl::OkStatus();
  const auto read = file_.Find(kKey)->AsInteger<uint32_t>();
  if (!read.ok()) return Corrupt(absl::StrCat("metadata key 'general.alignment' ", read.status().message()));
  const uint32_t alignment = *read;
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    return Corrupt(absl::StrCat("metadata key 'general.alignment' is ", alignment, ", not a power of two"));
  }
  file_.alignment_ = alignment;
  return absl::OkStatus();
}

absl::Status GgufParser::ParseTensorInfos(uint64_t tensor_count) {
  file_.tensors_.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    const uint64_t at = cursor_.pos();
    auto name = cursor_.ReadString("the name's length");
    if (!name.ok()) return In(name.status(), absl::StrCat("tensor info #", i, " at byte ", at));
    GgufTensorInfo info;
    info.name = std::string(*name);
    const auto where = [&] { return absl::StrCat("tensor '", info.name, "' (info at byte ", at, ")"); };
    auto n_dims = cursor_.Read<uint32_t>("the dimension count");
    if (!n_dims.ok()) return In(n_dims.status(), where());
    if (*n_dims > kGgufMaxDims) {
      return Corrupt(absl::StrCat(where(), " has ", *n_dims, " dimensions; GGML allows at most ", kGgufMaxDims));
    }
    for (uint32_t d = 0; d < *n_dims; ++d) {
      auto dim = cursor_.Read<uint64_t>("a dimension");
      if (!dim.ok()) return In(dim.status(), where());
      if (*dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Corrupt(absl::StrCat(where(), ": dimension ", d, " is ", *dim, ", beyond int64"));
      }
      info.dims.push_back(static_cast<int64_t>(*dim));
    }
    // Rows and elements in 128 bits: no product of four 63-bit dims wraps,
    // and rows is checked on its own since a zero-length row makes the
    // element count 0 whatever the other dims are.
    constexpr unsigned __int128 kMaxCount = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    unsigned __int128 rows = 1;
    for (size_t d = 1; d < info.dims.size(); ++d) {
      rows *= static_cast<uint64_t>(info.dims[d]);
      if (rows > kMaxCount) return Corrupt(absl::StrCat(where(), ": the dimensions' product overflows int64"));
    }
    info.cols = info.dims.empty() ? 1 : info.dims[0];
    const unsigned __int128 elements = rows * static_cast<uint64_t>(info.cols);
    if (elements > kMaxCount) return Corrupt(absl::StrCat(where(), ": the dimensions' product overflows int64"));
    info.rows = static_cast<int64_t>(rows);
    info.num_elements = static_cast<int64_t>(elements);
    const uint64_t type_at = cursor_.pos();
    auto type_id = cursor_.Read<uint32_t>("the type");
    if (!type_id.ok()) return In(type_id.status(), where());
    const GgmlTypeInfo* type = FindGgmlType(*type_id);
    if (type == nullptr) {
      return Corrupt(absl::StrCat(where(), ": GGML type id ", *type_id, " at byte ", type_at,
                                  " is not one GGML defines (a newer or corrupt file?)"));
    }
    info.type = type->type;
    if (info.cols % type->block_elements != 0) {
      return Corrupt(absl::StrCat(where(), ": a row of ", info.cols, " elements is not a whole number of ",
                                  std::string(type->name), " blocks (", type->block_elements, " elements each)"));
    }
    // At most (2^63 / 1) × 8 bytes: fits in 128 bits, checked against 64.
    const unsigned __int128 size_bytes =
        elements / static_cast<uint64_t>(type->block_elements) * static_cast<uint64_t>(type->block_bytes);
    if (size_bytes > std::numeric_limits<uint64_t>::max() / 2) {
      return Corrupt(absl::StrCat(where(), ": its size in bytes overflows"));
    }
    info.size_bytes = static_cast<uint64_t>(size_bytes);
    const uint64_t offset_at = cursor_.pos();
    auto offset = cursor_.Read<uint64_t>("the data offset");
    if (!offset.ok()) return In(offset.status(), where());
    info.offset = *offset;
    if (info.offset % file_.alignment_ != 0) {
      return Corrupt(absl::StrCat(where(), ": data offset ", info.offset, " (at byte ", offset_at,
                                  ") is not a multiple of the alignment ", file_.alignment_));
    }
    if (!file_.tensor_index_.emplace(info.name, file_.tensors_.size()).second) {
      return Corrupt(absl::StrCat(where(), ": a second tensor with this name"));
    }
    file_.tensors_.push_back(std::move(info));
  }
  return absl::OkStatus();
}

absl::Status GgufParser::PlaceTensors() {
  const uint64_t file_size = file_.file_size();
  const uint64_t end_of_infos = cursor_.pos();
  // end_of_infos <= file_size, so rounding up cannot wrap.
  file_.data_offset_ = (end_of_infos + file_.alignment_ - 1) / file_.alignment_ * file_.alignment_;
  std::vector<std::pair<uint64_t, const GgufTensorInfo*>> extents;
  for (GgufTensorInfo& info : file_.tensors_) {
    if (info.offset > file_size || file_.data_offset_ > file_size - info.offset ||
        info.size_bytes > file_size - info.offset - file_.data_offset_) {
      return Corrupt(absl::StrCat("tensor '", info.name, "': its ", info.size_bytes, " bytes at data offset ",
                                  info.offset, " (byte ", file_.data_offset_, " + ", info.offset,
                                  " of the file) end past the end of the file (", file_size,
                                  " bytes): truncated file?"));
    }
    info.file_offset = file_.data_offset_ + info.offset;
    if (info.size_bytes > 0) extents.emplace_back(info.file_offset, &info);
  }
  std::sort(extents.begin(), extents.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < extents.size(); ++i) {
    const GgufTensorInfo& before = *extents[i - 1].second;
    const GgufTensorInfo& after = *extents[i].second;
    if (after.file_offset < before.file_offset + before.size_bytes) {
      return Corrupt(absl::StrCat("tensors '", before.name, "' (bytes ", before.file_offset, " .. ",
                                  before.file_offset + before.size_bytes, ") and '", after.name, "' (from byte ",
                                  after.file_offset, ") overlap"));
    }
  }
  return absl::OkStatus();
}

absl::Status GgufParser::Parse() {
  uint64_t tensor_count = 0;
  uint64_t kv_count = 0;
  RETURN_IF_ERROR(ParseHeader(tensor_count, kv_count));
  RETURN_IF_ERROR(ParseMetadata(kv_count));
  RETURN_IF_ERROR(ReadAlignment());
  RETURN_IF_ERROR(ParseTensorInfos(tensor_count));
  return PlaceTensors();
}

std::string GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: return "uint8";
    case GgufValueType::kInt8: return "int8";
    case GgufValueType::kUint16: return "uint16";
    case GgufValueType::kInt16: return "int16";
    case GgufValueType::kUint32: return "uint32";
    case GgufValueType::kInt32: return "int32";
    case GgufValueType::kFloat32: return "float32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "uint64";
    case GgufValueType::kInt64: return "int64";
    case GgufValueType::kFloat64: return "float64";
  }
  return absl::StrCat("type ", static_cast<uint32_t>(type));
}

bool IsGgufInteger(GgufValueType type) {
  return ScalarWidth(type) > 0 && type != GgufValueType::kBool && type != GgufValueType::kFloat32 &&
         type != GgufValueType::kFloat64;
}

GgufValue GgufValue::Scalar(GgufValueType type, const std::byte* bytes) {
  GgufValue value;
  value.type_ = type;
  std::memcpy(&value.bits_, bytes, ScalarWidth(type));
  return value;
}

GgufValue GgufValue::String(std::string_view text) {
  GgufValue value;
  value.type_ = GgufValueType::kString;
  value.string_ = text;
  return value;
}

GgufValue GgufValue::Array(std::shared_ptr<const GgufArray> array) {
  GgufValue value;
  value.type_ = GgufValueType::kArray;
  value.array_ = std::move(array);
  return value;
}

std::string GgufValue::Describe() const {
  switch (type_) {
    case GgufValueType::kString: {
      constexpr size_t kShown = 40;
      const std::string shown(string_.substr(0, kShown));
      return absl::StrCat("string \"", shown, string_.size() > kShown ? "…" : "", "\"");
    }
    case GgufValueType::kArray:
      return absl::StrCat("array of ", array_->size(), " ", GgufValueTypeName(array_->element_type()));
    case GgufValueType::kBool: return bits_ != 0 ? "bool true" : "bool false";
    case GgufValueType::kFloat32: {
      float f;
      std::memcpy(&f, &bits_, 4);
      return absl::StrCat("float32 ", f);
    }
    case GgufValueType::kFloat64: {
      double d;
      std::memcpy(&d, &bits_, 8);
      return absl::StrCat("float64 ", d);
    }
    default: return absl::StrCat(GgufValueTypeName(type_), " ", Int128ToString(IntegerValue(type_, bits_)));
  }
}

template <typename T>
absl::StatusOr<T> GgufValue::AsInteger() const {
  if (!IsGgufInteger(type_)) {
    return absl::InvalidArgumentError(absl::StrCat("is ", Describe(), ", not an integer (", IntegerTypeName<T>(), ")"));
  }
  const __int128 value = IntegerValue(type_, bits_);
  if (value < std::numeric_limits<T>::min() || value > std::numeric_limits<T>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("holds ", Describe(), ", which does not fit in ",
                                                   IntegerTypeName<T>()));
  }
  return static_cast<T>(value);
}

template absl::StatusOr<uint32_t> GgufValue::AsInteger<uint32_t>() const;
template absl::StatusOr<int32_t> GgufValue::AsInteger<int32_t>() const;
template absl::StatusOr<uint64_t> GgufValue::AsInteger<uint64_t>() const;
template absl::StatusOr<int64_t> GgufValue::AsInteger<int64_t>() const;

absl::StatusOr<double> GgufValue::AsFloat64() const {
  if (type_ == GgufValueType::kFloat32) {
    float f;
    std::memcpy(&f, &bits_, 4);
    return f;
  }
  if (type_ == GgufValueType::kFloat64) {
    double d;
    std::memcpy(&d, &bits_, 8);
    return d;
  }
  return absl::InvalidArgumentError(absl::StrCat("is ", Describe(), ", not a floating-point number"));
}

absl::StatusOr<float> GgufValue::AsFloat32() const {
  ASSIGN_OR_RETURN(const double d, AsFloat64());
  if (type_ == GgufValueType::kFloat64 && std::isfinite(d) && std::fabs(d) > std::numeric_limits<float>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("holds ", Describe(), ", which does not fit in float32"));
  }
  return static_cast<float>(d);
}

absl::StatusOr<bool> GgufValue::AsBool() const {
  if (type_ != GgufValueType::kBool) {
    return absl::InvalidArgumentError(absl::StrCat("is ", Describe(), ", not a bool"));
  }
  return bits_ != 0;
}

absl::StatusOr<std::string_view> GgufValue::AsString() const {
  if (type_ != GgufValueType::kString) {
    return absl::InvalidArgumentError(absl::StrCat("is ", Describe(), ", not a string"));
  }
  return string_;
}

absl::StatusOr<const GgufArray*> GgufValue::AsArray() const {
  if (type_ != GgufValueType::kArray) {
    return absl::InvalidArgumentError(absl::StrCat("is ", Describe(), ", not an array"));
  }
  return array_.get();
}

GgufValue GgufArray::Element(uint64_t i) const {
  switch (element_type_) {
    case GgufValueType::kString: return GgufValue::String(strings_[i]);
    case GgufValueType::kArray: return arrays_[i];
    default: {
      const uint64_t width = ScalarWidth(element_type_);
      return GgufValue::Scalar(element_type_, scalar_bytes_.data() + i * width);
    }
  }
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  auto file = std::unique_ptr<GgufFile>(new GgufFile());
  ASSIGN_OR_RETURN(file->file_, MappedFile::Open(path));
  RETURN_IF_ERROR(GgufParser(*file).Parse());
  return file;
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = metadata_index_.find(absl::string_view(key.data(), key.size()));
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

absl::Status GgufFile::KeyError(std::string_view key, const absl::Status& status) const {
  return absl::Status(status.code(),
                      absl::StrCat(path(), ": metadata key '", std::string(key), "' ", status.message()));
}

absl::StatusOr<const GgufValue*> GgufFile::Require(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) {
    return absl::NotFoundError(absl::StrCat(path(), ": metadata key '", std::string(key), "' is missing"));
  }
  return value;
}

template <typename T>
absl::StatusOr<T> GgufFile::GetInteger(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(key));
  auto result = value->AsInteger<T>();
  if (!result.ok()) return KeyError(key, result.status());
  return *result;
}

absl::StatusOr<uint32_t> GgufFile::GetUint32(std::string_view key) const { return GetInteger<uint32_t>(key); }
absl::StatusOr<int32_t> GgufFile::GetInt32(std::string_view key) const { return GetInteger<int32_t>(key); }
absl::StatusOr<uint64_t> GgufFile::GetUint64(std::string_view key) const { return GetInteger<uint64_t>(key); }
absl::StatusOr<int64_t> GgufFile::GetInt64(std::string_view key) const { return GetInteger<int64_t>(key); }

absl::StatusOr<std::string_view> GgufFile::GetString(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(key));
  auto result = value->AsString();
  if (!result.ok()) return KeyError(key, result.status());
  return *result;
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(key));
  auto result = value->AsBool();
  if (!result.ok()) return KeyError(key, result.status());
  return *result;
}

absl::StatusOr<float> GgufFile::GetFloat32(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(key));
  auto result = value->AsFloat32();
  if (!result.ok()) return KeyError(key, result.status());
  return *result;
}

absl::StatusOr<double> GgufFile::GetFloat64(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(key));
  auto result = value->AsFloat64();
  if (!result.ok()) return KeyError(key, result.status());
  return *result;
}

absl::StatusOr<const GgufArray*> GgufFile::GetArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, Require(key));
  auto result = value->AsArray();
  if (!result.ok()) return KeyError(key, result.status());
  return *result;
}

absl::StatusOr<absl::Span<const std::string_view>> GgufFile::GetStringArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufArray* array, GetArray(key));
  if (array->element_type() != GgufValueType::kString) {
    return KeyError(key, absl::InvalidArgumentError(absl::StrCat("is an array of ",
                                                                 GgufValueTypeName(array->element_type()),
                                                                 ", not of string")));
  }
  return array->strings();
}

template <typename T>
absl::StatusOr<std::vector<T>> GgufFile::GetIntegerArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufArray* array, GetArray(key));
  if (!IsGgufInteger(array->element_type())) {
    return KeyError(key, absl::InvalidArgumentError(absl::StrCat("is an array of ",
                                                                 GgufValueTypeName(array->element_type()),
                                                                 ", not of integers (", IntegerTypeName<T>(), ")")));
  }
  std::vector<T> out;
  out.reserve(array->size());
  for (uint64_t i = 0; i < array->size(); ++i) {
    auto element = array->Element(i).AsInteger<T>();
    if (!element.ok()) {
      return KeyError(key, absl::InvalidArgumentError(absl::StrCat("element ", i, " ", element.status().message())));
    }
    out.push_back(*element);
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> GgufFile::GetInt32Array(std::string_view key) const {
  return GetIntegerArray<int32_t>(key);
}
absl::StatusOr<std::vector<int64_t>> GgufFile::GetInt64Array(std::string_view key) const {
  return GetIntegerArray<int64_t>(key);
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloat32Array(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufArray* array, GetArray(key));
  if (array->element_type() != GgufValueType::kFloat32 && array->element_type() != GgufValueType::kFloat64) {
    return KeyError(key, absl::InvalidArgumentError(absl::StrCat("is an array of ",
                                                                 GgufValueTypeName(array->element_type()),
                                                                 ", not of float32")));
  }
  std::vector<float> out;
  out.reserve(array->size());
  for (uint64_t i = 0; i < array->size(); ++i) {
    auto element = array->Element(i).AsFloat32();
    if (!element.ok()) {
      return KeyError(key, absl::InvalidArgumentError(absl::StrCat("element ", i, " ", element.status().message())));
    }
    out.push_back(*element);
  }
  return out;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(absl::string_view(name.data(), name.size()));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<GgufWeight> GgufFile::Weight(std::string_view name) const {
  const GgufTensorInfo* info = FindTensor(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat(path(), ": no tensor '", std::string(name), "'"));
  }
  auto dtype = GgmlTypeToDType(info->type);
  if (!dtype.ok()) {
    return absl::Status(dtype.status().code(),
                        absl::StrCat(path(), ": tensor '", info->name, "': ", dtype.status().message()));
  }
  return GgufWeight{.info = info, .dtype = *dtype, .rows = info->rows, .cols = info->cols, .bytes = TensorData(*info)};
}

}  // namespace expertd::formats
