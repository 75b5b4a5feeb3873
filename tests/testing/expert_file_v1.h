#ifndef EXPERTD_TESTS_TESTING_EXPERT_FILE_V1_H_
#define EXPERTD_TESTS_TESTING_EXPERT_FILE_V1_H_

// Versions 1 and 2 of the packed expert file, written by hand from
// io/FORMAT.md, for the tests that prove such files still load: the writer
// only writes version 3 now. tests/io checks that the version-1 rewrite of a
// file reproduces, byte for byte, a file the version-1 writer made.

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

inline std::vector<std::byte> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::byte> bytes;
  for (std::istreambuf_iterator<char> it(in), end; it != end; ++it) bytes.push_back(static_cast<std::byte>(*it));
  return bytes;
}

inline absl::Status WriteWholeFile(const std::string& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  return out ? absl::OkStatus() : absl::InternalError("cannot write " + path);
}

// The XXH64 of a version-3 file's bundle, as versions 1 and 2 checksum it.
inline uint64_t BundleXxh64(const std::vector<std::byte>& v3, uint64_t entry) {
  const uint64_t offset = Load(v3, 4096 + entry * 32, 8);
  const uint64_t length = Load(v3, 4096 + entry * 32 + 8, 8);
  return length == 0 ? 0 : io::Xxh64(absl::MakeConstSpan(v3.data() + offset, length));
}

inline bool IsVersion3(const std::vector<std::byte>& file) { return file.size() >= 4096 && Load(file, 8, 4) == 3; }
}  // namespace expert_file_v1_internal

// Rewrites the version-3 file at `v3_path` (as the writer writes it) as a
// version-2 file at `v2_path`: the same bytes but for the version field
// and the bundles' checksums (XXH64 instead of XXH3), and so the index and
// header checksums.
inline absl::Status RewriteAsVersion2(const std::string& v3_path, const std::string& v2_path) {
  using namespace expert_file_v1_internal;
  std::vector<std::byte> file = ReadWholeFile(v3_path);
  if (!IsVersion3(file)) return absl::InvalidArgumentError(v3_path + " is not version 3");
  const uint64_t entries = Load(file, 72, 8) / 32;
  Store(file, 8, 4, 2);
  for (uint64_t i = 0; i < entries; ++i) Store(file, 4096 + i * 32 + 16, 8, BundleXxh64(file, i));
  Store(file, 80, 8, io::Xxh64(absl::MakeConstSpan(file.data() + 4096, entries * 32)));
  Store(file, 4088, 8, io::Xxh64(absl::MakeConstSpan(file.data(), 4088)));
  return WriteWholeFile(v2_path, file);
}

// Rewrites the version-3 file at `v2_path` (as the writer writes it; the
// name is the layout's, which version 2 shares), whose bundles must all be
// in one dtype (the slot's), as a version-1 file at `v1_path`: 24-byte index
// entries, a u32 dtype, XXH64 bundle checksums, the data region moved to its
// version-1 offset.
inline absl::Status RewriteAsVersion1(const std::string& v2_path, const std::string& v1_path) {
  using namespace expert_file_v1_internal;
  std::vector<std::byte> v2 = ReadWholeFile(v2_path);
  if (!IsVersion3(v2)) return absl::InvalidArgumentError(v2_path + " is not version 3");
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
    Store(v1, to + 16, 8, BundleXxh64(v2, i));
  }
  std::copy(v2.begin() + static_cast<ptrdiff_t>(v2_data), v2.end(), v1.begin() + static_cast<ptrdiff_t>(v1_data));
  Store(v1, 72, 8, entries * 24);  // index_bytes
  Store(v1, 80, 8, io::Xxh64(absl::MakeConstSpan(v1.data() + 4096, entries * 24)));
  Store(v1, 88, 8, v1_data);
  Store(v1, 104, 8, file_bytes);
  Store(v1, 4088, 8, io::Xxh64(absl::MakeConstSpan(v1.data(), 4088)));
  return WriteWholeFile(v1_path, v1);
}

}  // namespace expertd::testing

#endif  // EXPERTD_TESTS_TESTING_EXPERT_FILE_V1_H_
