// A .safetensors file (engine/safetensors.h, SafetensorsFile::Open): the
// 8-byte header length, the JSON header, and the checks on every tensor's
// dtype, shape and data_offsets. The input is the whole file; Open only
// takes a path, so it is written to a memfd and opened through /proc.
//
// Asserts beyond "no crash": when Open accepts the file, everything a later
// read relies on holds: the header is the input's bytes after the length;
// every tensor lies inside the file after the header, its size is its
// element count times its dtype's size, and no two tensors overlap; Find
// returns each by name; and Read gives exactly the input's bytes at the
// tensor's offset.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "formats/safetensors.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static expertd::fuzz::MemoryFile file;  // one per run: see MemoryFile
  auto opened = expertd::formats::SafetensorsFile::Open(file.Write(data, size));
  if (!opened.ok()) return 0;
  const expertd::formats::SafetensorsFile& st = **opened;

  FUZZ_CHECK(st.file_size() == size);
  const std::string& header = st.header_json();
  FUZZ_CHECK(8 + header.size() <= size && std::memcmp(header.data(), data + 8, header.size()) == 0);
  const uint64_t data_start = 8 + header.size();

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<std::byte> bytes;
  for (const auto& [name, tensor] : st.tensors()) {
    FUZZ_CHECK(tensor.name == name && st.Find(name) == &tensor);
    const size_t dtype_bytes = expertd::formats::SafetensorsDtypeSize(tensor.dtype);
    FUZZ_CHECK(dtype_bytes > 0);
    FUZZ_CHECK(tensor.num_elements() >= 0);
    FUZZ_CHECK(static_cast<uint64_t>(tensor.num_elements()) * dtype_bytes == tensor.size_bytes);
    FUZZ_CHECK(tensor.offset >= data_start && tensor.offset <= size && tensor.size_bytes <= size - tensor.offset);
    bytes.assign(tensor.size_bytes, std::byte{0});
    FUZZ_CHECK(st.Read(tensor, bytes.data()).ok());
    FUZZ_CHECK(tensor.size_bytes == 0 || std::memcmp(bytes.data(), data + tensor.offset, tensor.size_bytes) == 0);
    if (tensor.size_bytes > 0) ranges.emplace_back(tensor.offset, tensor.offset + tensor.size_bytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) FUZZ_CHECK(ranges[i].first >= ranges[i - 1].second);
  return 0;
}
