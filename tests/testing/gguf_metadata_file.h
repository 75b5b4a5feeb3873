#ifndef EXPERTD_TESTS_TESTING_GGUF_METADATA_FILE_H_
#define EXPERTD_TESTS_TESTING_GGUF_METADATA_FILE_H_

// Metadata-only GGUF files (key/values, no tensors) written by tests, for
// the code that reads a model's hyperparameters or vocabulary from GGUF
// metadata: each test states only the keys it is about.

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "formats/gguf_file.h"

namespace expertd::testing {

class GgufMetadataFile {
 public:
  GgufMetadataFile& Str(std::string_view key, std::string_view value) {
    Key(key, 8);
    return Bytes(value);
  }
  GgufMetadataFile& U32(std::string_view key, uint32_t value) {
    Key(key, 4);
    return Raw(&value, 4);
  }
  GgufMetadataFile& I32(std::string_view key, int32_t value) {
    Key(key, 5);
    return Raw(&value, 4);
  }
  GgufMetadataFile& F32(std::string_view key, float value) {
    Key(key, 6);
    return Raw(&value, 4);
  }
  GgufMetadataFile& Bool(std::string_view key, bool value) {
    Key(key, 7);
    const uint8_t byte = value ? 1 : 0;
    return Raw(&byte, 1);
  }
  GgufMetadataFile& U32Array(std::string_view key, const std::vector<uint32_t>& values) {
    ArrayHeader(key, 4, values.size());
    return Raw(values.data(), 4 * values.size());
  }
  GgufMetadataFile& BoolArray(std::string_view key, const std::vector<bool>& values) {
    ArrayHeader(key, 7, values.size());
    for (bool value : values) {
      const uint8_t byte = value ? 1 : 0;
      Raw(&byte, 1);
    }
    return *this;
  }
  GgufMetadataFile& I32Array(std::string_view key, const std::vector<int32_t>& values) {
    ArrayHeader(key, 5, values.size());
    return Raw(values.data(), 4 * values.size());
  }
  GgufMetadataFile& F32Array(std::string_view key, const std::vector<float>& values) {
    ArrayHeader(key, 6, values.size());
    return Raw(values.data(), 4 * values.size());
  }
  GgufMetadataFile& StrArray(std::string_view key, const std::vector<std::string>& values) {
    ArrayHeader(key, 8, values.size());
    for (const std::string& value : values) Bytes(value);
    return *this;
  }

  // The bytes of the whole file.
  std::string Serialize() const {
    std::string bytes = "GGUF";
    const uint32_t version = 3;
    const uint64_t tensors = 0;
    bytes.append(reinterpret_cast<const char*>(&version), 4);
    bytes.append(reinterpret_cast<const char*>(&tensors), 8);
    bytes.append(reinterpret_cast<const char*>(&count_), 8);
    return bytes + body_;
  }
  // The file written to a memfd and opened (the mapping outlives the fd).
  absl::StatusOr<std::unique_ptr<formats::GgufFile>> Open() const {
    const int fd = ::memfd_create("gguf-metadata-test", MFD_CLOEXEC);
    if (fd < 0) return absl::InternalError("memfd_create failed");
    const std::string bytes = Serialize();
    const bool written = ::pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size());
    auto file = formats::GgufFile::Open(absl::StrCat("/proc/self/fd/", fd));
    ::close(fd);
    if (!written) return absl::InternalError("writing the memfd failed");
    return file;
  }

 private:
  GgufMetadataFile& Key(std::string_view key, uint32_t type) {
    ++count_;
    Bytes(key);
    return Raw(&type, 4);
  }
  GgufMetadataFile& ArrayHeader(std::string_view key, uint32_t element_type, uint64_t size) {
    Key(key, 9);
    return Raw(&element_type, 4).Raw(&size, 8);
  }
  GgufMetadataFile& Bytes(std::string_view s) {
    const uint64_t n = s.size();
    Raw(&n, 8);
    body_.append(s);
    return *this;
  }
  GgufMetadataFile& Raw(const void* p, size_t n) {
    body_.append(static_cast<const char*>(p), n);
    return *this;
  }

  std::string body_;
  uint64_t count_ = 0;
};

}  // namespace expertd::testing

#endif  // EXPERTD_TESTS_TESTING_GGUF_METADATA_FILE_H_
