// A GGUF file (formats/gguf_file.h, GgufFile::Open): header, metadata
// key/values with nested arrays, tensor infos. The input is the whole file;
// Open only takes a path, so it is written to a memfd and opened (and
// mapped) through /proc.
//
// Asserts beyond "no crash": when Open accepts the file, everything a later
// access relies on holds: the version is 2 or 3, the alignment a power of
// two and the data section aligned; every key and tensor is found by name;
// every tensor lies inside the file at an aligned offset, its size is whole
// blocks of its type, no two overlap, and its bytes are the input's; every
// metadata value and array element can be visited and converted, each typed
// accessor answering a value or InvalidArgument, and integer accessors agree
// with each other; Weight answers for exactly the types GgmlTypeToDType maps.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "formats/gguf_file.h"
#include "fuzz/fuzz_util.h"

namespace {

using expertd::formats::GgufArray;
using expertd::formats::GgufFile;
using expertd::formats::GgufValue;
using expertd::formats::GgufValueType;

template <typename T>
void CheckAnswer(const absl::StatusOr<T>& result) {
  FUZZ_CHECK(result.ok() || result.status().code() == absl::StatusCode::kInvalidArgument);
}

// Converts a value every way there is; recurses into arrays (their depth
// is bounded by the parser).
void Visit(const GgufValue& value) {
  (void)value.Describe();
  const auto u64 = value.AsInteger<uint64_t>();
  const auto i64 = value.AsInteger<int64_t>();
  const auto u32 = value.AsInteger<uint32_t>();
  const auto i32 = value.AsInteger<int32_t>();
  CheckAnswer(u64);
  CheckAnswer(i64);
  CheckAnswer(u32);
  CheckAnswer(i32);
  if (u64.ok() && i64.ok()) FUZZ_CHECK(*u64 == static_cast<uint64_t>(*i64));
  if (u32.ok()) FUZZ_CHECK(u64.ok() && *u64 == *u32);
  if (i32.ok()) FUZZ_CHECK(i64.ok() && *i64 == *i32);
  CheckAnswer(value.AsFloat32());
  CheckAnswer(value.AsFloat64());
  CheckAnswer(value.AsBool());
  CheckAnswer(value.AsString());
  const auto array = value.AsArray();
  CheckAnswer(array);
  FUZZ_CHECK(array.ok() == (value.type() == GgufValueType::kArray));
  if (!array.ok()) return;
  const GgufArray& a = **array;
  FUZZ_CHECK(a.element_type() != GgufValueType::kString || a.strings().size() == a.size());
  for (uint64_t i = 0; i < a.size(); ++i) {
    const GgufValue element = a.Element(i);
    FUZZ_CHECK(element.type() == a.element_type());
    Visit(element);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static expertd::fuzz::MemoryFile file;  // one per run: see MemoryFile
  auto opened = GgufFile::Open(file.Write(data, size));
  if (!opened.ok()) {
    FUZZ_CHECK(!opened.status().message().empty());
    return 0;
  }
  const GgufFile& gguf = **opened;

  FUZZ_CHECK(gguf.file_size() == size);
  FUZZ_CHECK(gguf.version() == 2 || gguf.version() == 3);
  const uint64_t alignment = gguf.alignment();
  FUZZ_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0);
  FUZZ_CHECK(gguf.data_offset() % alignment == 0 && gguf.data_offset() >= 24);

  for (const auto& [key, value] : gguf.metadata()) {
    FUZZ_CHECK(gguf.Find(key) != nullptr);
    Visit(value);
    CheckAnswer(gguf.GetString(key));
    CheckAnswer(gguf.GetUint32(key));
    CheckAnswer(gguf.GetFloat32(key));
    CheckAnswer(gguf.GetStringArray(key));
    CheckAnswer(gguf.GetInt32Array(key));
    CheckAnswer(gguf.GetInt64Array(key));
    CheckAnswer(gguf.GetFloat32Array(key));
  }

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& tensor : gguf.tensors()) {
    FUZZ_CHECK(gguf.FindTensor(tensor.name) == &tensor);
    const auto& type = expertd::formats::GgmlTypeInfoOf(tensor.type);
    FUZZ_CHECK(tensor.dims.size() <= expertd::formats::kGgufMaxDims);
    FUZZ_CHECK(tensor.rows >= 0 && tensor.cols >= 0 && tensor.num_elements == tensor.rows * tensor.cols);
    FUZZ_CHECK(tensor.cols % type.block_elements == 0);
    FUZZ_CHECK(static_cast<uint64_t>(tensor.num_elements / type.block_elements * type.block_bytes) ==
               tensor.size_bytes);
    FUZZ_CHECK(tensor.offset % alignment == 0 && tensor.file_offset == gguf.data_offset() + tensor.offset);
    FUZZ_CHECK(tensor.file_offset <= size && tensor.size_bytes <= size - tensor.file_offset);
    const auto bytes = gguf.TensorData(tensor);
    FUZZ_CHECK(bytes.size() == tensor.size_bytes);
    FUZZ_CHECK(bytes.empty() || std::memcmp(bytes.data(), data + tensor.file_offset, bytes.size()) == 0);
    if (tensor.size_bytes > 0) ranges.emplace_back(tensor.file_offset, tensor.file_offset + tensor.size_bytes);

    const auto weight = gguf.Weight(tensor.name);
    const bool float_type = expertd::formats::GgmlTypeToDType(tensor.type).ok();
    FUZZ_CHECK(weight.ok() == float_type);
    FUZZ_CHECK(weight.ok() || weight.status().code() == absl::StatusCode::kUnimplemented);
    if (weight.ok()) FUZZ_CHECK(weight->info == &tensor && weight->bytes.size() == tensor.size_bytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) FUZZ_CHECK(ranges[i].first >= ranges[i - 1].second);
  return 0;
}
