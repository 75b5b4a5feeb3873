#include "formats/safetensors.h"

#include <cstring>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_models.h"

namespace expertd::formats {
namespace {

using ::expertd::testing::ScopedTempDir;
using ::testing::HasSubstr;

std::vector<std::byte> FloatBytes(const std::vector<float>& values) {
  std::vector<std::byte> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t length = header.size();
  out.write(reinterpret_cast<const char*>(&length), 8);
  out << header << std::string(data_bytes, '\0');
}

std::string OpenError(const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  EXPECT_FALSE(file.ok());
  return file.ok() ? "" : std::string(file.status().message());
}

TEST(Safetensors, WriteThenReadRoundTrips) {
  ScopedTempDir dir("st");
  const std::string path = dir.Sub("a.safetensors");
  std::vector<TensorToWrite> tensors;
  tensors.push_back({"b", SafetensorsDtype::kF32, {2, 3}, FloatBytes({1, 2, 3, 4, 5, 6})});
  tensors.push_back({"a", SafetensorsDtype::kBF16, {3}, std::vector<std::byte>(6, std::byte{0x3f})});
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo* b = (*file)->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(b->dtype, SafetensorsDtype::kF32);
  float values[6];
  ASSERT_TRUE((*file)->Read(*b, reinterpret_cast<std::byte*>(values)).ok());
  EXPECT_EQ(values[5], 6.0f);
  // The format has no padding between tensors: "b" follows "a"'s 6 bytes.
  const TensorInfo* a = (*file)->Find("a");
  EXPECT_EQ(a->size_bytes, 6u);
  EXPECT_EQ(b->offset, a->offset + 6);
  std::byte a_bytes[6];
  ASSERT_TRUE((*file)->Read(*a, a_bytes).ok());
  EXPECT_EQ(static_cast<uint8_t>(a_bytes[5]), 0x3fu);
  EXPECT_EQ(b->offset + b->size_bytes, (*file)->file_size());
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->Find("c"), nullptr);
}

TEST(Safetensors, RejectsMalformedHeaders) {
  ScopedTempDir dir("st_bad");
  const std::string path = dir.Sub("x.safetensors");
  WriteRaw(path, "not json", 0);
  EXPECT_THAT(OpenError(path), HasSubstr("not a JSON object"));
  WriteRaw(path, R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4);
  EXPECT_THAT(OpenError(path), HasSubstr("truncated"));
  WriteRaw(path, R"({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8);
  EXPECT_THAT(OpenError(path), HasSubstr("needs 12 bytes"));
  WriteRaw(path, R"({"t": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})", 8);
  EXPECT_THAT(OpenError(path), HasSubstr("unsupported dtype Q4"));
  WriteRaw(path, R"({"t": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8);
  EXPECT_THAT(OpenError(path), HasSubstr("negative"));
  WriteRaw(path, R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8);
  EXPECT_THAT(OpenError(path), HasSubstr("begin after"));
  WriteRaw(path,
           R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
           12);
  EXPECT_THAT(OpenError(path), HasSubstr("overlap"));
  WriteRaw(path, R"({"t": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 8]}})", 8);
  EXPECT_THAT(OpenError(path), HasSubstr("absurdly large"));
  std::ofstream(path, std::ios::trunc) << "abc";
  EXPECT_THAT(OpenError(path), HasSubstr("shorter than"));
  EXPECT_THAT(OpenError(dir.Sub("missing.safetensors")), HasSubstr("cannot open"));
}

}  // namespace
}  // namespace expertd::formats
