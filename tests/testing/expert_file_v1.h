#ifndef EXPERTD_TESTS_TESTING_EXPERT_FILE_V1_H_
#define EXPERTD_TESTS_TESTING_EXPERT_FILE_V1_H_

// Version 1 of the packed expert file, written by hand from io/FORMAT.md
// ("Version 1"), for the tests that prove such files still load: the writer
// only writes version 2 now. tests/io checks that this rewrite of a file
// reproduces, byte for byte, a file the version-1 writer made.

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "io/expert_file.h"

namespace expertd::testing {

namespace expert_file_v1_internal {
inline uint64_t Load(const std::vector<std::byte>& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(b[at + i]) << (8 * i);
  return v;
}
inline void Store(std::vector<std::byte>& b, size_t at, int bytes, uint64_t v) {
  for (int i = 0; i < bytes; ++i) b[at + i] = static_cast<std::byte>(v >> (8 * i));
}
}  // namespace expert_file_v1_internal

// Rewrites the version-2 file at `v2_path`, whose bundles must all be in one
// dtype (the slot's), as a version-1 file at `v1_path`: 24-byte index
// entries, a u32 dtype, the data region moved to its version-1 offset.
inline absl::Status RewriteAsVersion1(const std::string& v2_path, const std::string& v1_path) {
  using expert_file_v1_internal::Load;
  using expert_file_v1_internal::Store;
  std::ifstream in(v2_path, std::ios::binary);
  std::vector<std::byte> v2;
  for (std::istreambuf_iterator<char> it(in), end; it != end; ++it) v2.push_back(static_cast<std::byte>(*it));
  if (v2.size() < 4096 || Load(v2, 8, 4) != 2) return absl::InvalidArgumentError(v2_path + " is not version 2");
  const uint64_t code = Load(v2, 24, 1);
  if (Load(v2, 25, 1) != code || Load(v2, 26, 1) != code) {
    return absl::InvalidArgumentError(v2_path + " mixes dtypes: version 1 holds one");
  }
  const uint64_t entries = Load(v2, 72, 8) / 32;
  const uint64_t alignment = Load(v2, 44, 4);
  const uint64_t v2_data = Load(v2, 88, 8);
  const uint64_t v1_data = (4096 + entries * 24 + alignment - 1) / alignment * alignment;
  const uint64_t file_bytes = v1_data + (v2.size() - v2_data);

  std::vector<std::byte> v1(file_bytes);
  std::copy(v2.begin(), v2.begin() + 4096, v1.begin());
  Store(v1, 8, 4, 1);     // version
  Store(v1, 24, 4, code);  // dtype, u32
  for (uint64_t i = 0; i < entries; ++i) {
    const size_t from = 4096 + i * 32, to = 4096 + i * 24;
    if (Load(v2, from + 24, 1) != Load(v2, from + 25, 1) || Load(v2, from + 24, 1) != Load(v2, from + 26, 1) ||
        (Load(v2, from + 8, 8) != 0 && Load(v2, from + 24, 1) != code)) {
      return absl::InvalidArgumentError(absl::StrCat(v2_path, ": entry ", i, " is not in the file's one dtype"));
    }
    const uint64_t offset = Load(v2, from, 8);
    Store(v1, to, 8, offset == 0 ? 0 : offset - v2_data + v1_data);
    Store(v1, to + 8, 8, Load(v2, from + 8, 8));
    Store(v1, to + 16, 8, Load(v2, from + 16, 8));
  }
  std::copy(v2.begin() + static_cast<ptrdiff_t>(v2_data), v2.end(), v1.begin() + static_cast<ptrdiff_t>(v1_data));
  Store(v1, 72, 8, entries * 24);  // index_bytes
  Store(v1, 80, 8, io::Xxh64(absl::MakeConstSpan(v1.data() + 4096, entries * 24)));
  Store(v1, 88, 8, v1_data);
  Store(v1, 104, 8, file_bytes);
  Store(v1, 4088, 8, io::Xxh64(absl::MakeConstSpan(v1.data(), 4088)));
  std::ofstream out(v1_path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(v1.data()), static_cast<std::streamsize>(v1.size()));
  out.close();
  return out ? absl::OkStatus() : absl::InternalError("cannot write " + v1_path);
}

}  // namespace expertd::testing

#endif  // EXPERTD_TESTS_TESTING_EXPERT_FILE_V1_H_
