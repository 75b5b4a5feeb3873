// The GGUF reader on files written by llama.cpp's gguf package
// (testdata/, made by make_gguf_fixtures.py, with expected.json saying what
// is in them), and on corrupt files built here byte by byte: each must give
// a clean error naming the problem, never a crash or an accepted file.

#include "formats/gguf_file.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace expertd::formats {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using nlohmann::json;

const std::string kTestdata = EXPERTD_GGUF_TESTDATA;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A file in memory (memfd), opened by its /proc path and rewritten for each
// variant: the truncation test opens well over a thousand files, which on a
// disk-backed temp dir takes seconds.
class ScratchFile {
 public:
  ScratchFile() : fd_(::memfd_create("expertd-gguf-test", MFD_CLOEXEC)) {
    EXPECT_GE(fd_, 0);
    path_ = absl::StrCat("/proc/self/fd/", fd_);
  }
  ~ScratchFile() { ::close(fd_); }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  const std::string& Write(const std::string& bytes) {
    EXPECT_EQ(::ftruncate(fd_, 0), 0);
    EXPECT_EQ(::pwrite(fd_, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

// Compares a parsed value with expected.json's {type, value[, element_type]}.
void ExpectValue(const GgufValue& value, const json& expected, const std::string& where) {
  const std::string type = expected["type"];
  ASSERT_EQ(GgufValueTypeName(value.type()), type) << where;
  if (type == "array") {
    auto array = value.AsArray();
    ASSERT_TRUE(array.ok()) << where;
    const std::string element_type = expected["element_type"];
    ASSERT_EQ(GgufValueTypeName((*array)->element_type()), element_type) << where;
    const json& items = expected["value"];
    ASSERT_EQ((*array)->size(), items.size()) << where;
    for (size_t i = 0; i < items.size(); ++i) {
      const json element = element_type == "array" ? items[i] : json{{"type", element_type}, {"value", items[i]}};
      ExpectValue((*array)->Element(i), element, absl::StrCat(where, "[", i, "]"));
    }
    if (element_type == "string") {
      ASSERT_EQ((*array)->strings().size(), items.size()) << where;
      for (size_t i = 0; i < items.size(); ++i) EXPECT_EQ((*array)->strings()[i], items[i].get<std::string>());
    }
  } else if (type == "string") {
    EXPECT_EQ(*value.AsString(), expected["value"].get<std::string>()) << where;
  } else if (type == "bool") {
    EXPECT_EQ(*value.AsBool(), expected["value"].get<bool>()) << where;
  } else if (type == "float32") {
    EXPECT_FLOAT_EQ(*value.AsFloat32(), expected["value"].get<float>()) << where;
  } else if (type == "float64") {
    EXPECT_DOUBLE_EQ(*value.AsFloat64(), expected["value"].get<double>()) << where;
  } else if (expected["value"].is_number_unsigned()) {
    EXPECT_EQ(*value.AsInteger<uint64_t>(), expected["value"].get<uint64_t>()) << where;
  } else {
    EXPECT_EQ(*value.AsInteger<int64_t>(), expected["value"].get<int64_t>()) << where;
  }
}

class GgufFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufFixtureTest, FindsWhatTheWriterWrote) {
  const json all = json::parse(ReadAll(kTestdata + "/expected.json"));
  const json* expected = nullptr;
  for (const json& file : all["files"]) {
    if (file["file"] == GetParam()) expected = &file;
  }
  ASSERT_NE(expected, nullptr) << GetParam() << " is not in expected.json";
  auto opened = GgufFile::Open(kTestdata + "/" + GetParam());
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufFile& file = **opened;

  EXPECT_EQ(file.version(), (*expected)["version"].get<uint32_t>());
  EXPECT_EQ(file.alignment(), (*expected)["alignment"].get<uint64_t>());
  EXPECT_EQ(file.data_offset(), (*expected)["data_offset"].get<uint64_t>());
  EXPECT_EQ(file.file_size(), (*expected)["file_size"].get<uint64_t>());

  const json& metadata = (*expected)["metadata"];
  ASSERT_EQ(file.metadata().size(), metadata.size());
  for (size_t i = 0; i < metadata.size(); ++i) {
    const std::string key = metadata[i]["key"];
    EXPECT_EQ(file.metadata()[i].first, key) << "key #" << i;
    const GgufValue* found = file.Find(key);
    ASSERT_EQ(found, &file.metadata()[i].second) << key;
    ExpectValue(*found, metadata[i], key);
  }

  const json& tensors = (*expected)["tensors"];
  ASSERT_EQ(file.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensorInfo& info = file.tensors()[i];
    const std::string name = tensors[i]["name"];
    SCOPED_TRACE(name);
    EXPECT_EQ(info.name, name);
    EXPECT_EQ(file.FindTensor(name), &info);
    EXPECT_EQ(GgmlTypeName(info.type), tensors[i]["type"].get<std::string>());
    const std::vector<int64_t> dims = tensors[i]["dims"];
    EXPECT_EQ(info.dims, dims);
    EXPECT_EQ(info.shape(), std::vector<int64_t>(dims.rbegin(), dims.rend()));
    int64_t rows = 1;
    for (size_t d = 1; d < dims.size(); ++d) rows *= dims[d];
    EXPECT_EQ(info.cols, dims[0]);
    EXPECT_EQ(info.rows, rows);
    EXPECT_EQ(info.num_elements, rows * dims[0]);
    EXPECT_EQ(info.offset, tensors[i]["offset"].get<uint64_t>());
    EXPECT_EQ(info.file_offset, tensors[i]["file_offset"].get<uint64_t>());
    EXPECT_EQ(info.size_bytes, tensors[i]["size_bytes"].get<uint64_t>());
    const auto data = file.TensorData(info);
    const std::string bytes(reinterpret_cast<const char*>(data.data()), data.size());
    EXPECT_EQ(absl::BytesToHexString(bytes), tensors[i]["data_hex"].get<std::string>());
  }
  EXPECT_EQ(file.FindTensor("no.such.tensor"), nullptr);
  EXPECT_EQ(file.Find("no.such.key"), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GgufFixtureTest,
                         ::testing::Values("all_types.gguf", "aligned64_v2.gguf", "metadata_only.gguf",
                                           "tiny_model.gguf"));

class GgufAccessorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = GgufFile::Open(kTestdata + "/all_types.gguf");
    ASSERT_TRUE(opened.ok()) << opened.status();
    file_ = std::move(*opened);
  }
  std::unique_ptr<GgufFile> file_;
};

TEST_F(GgufAccessorTest, IntegersConvertWhenTheValueFits) {
  EXPECT_EQ(*file_->GetUint32("test.uint8"), 200u);
  EXPECT_EQ(*file_->GetInt32("test.uint8"), 200);
  EXPECT_EQ(*file_->GetInt64("test.int8"), -100);
  EXPECT_EQ(*file_->GetUint32("test.uint16"), 65535u);
  EXPECT_EQ(*file_->GetInt32("test.small_uint64"), 7);
  EXPECT_EQ(*file_->GetUint64("test.uint64"), UINT64_MAX);
  EXPECT_EQ(*file_->GetInt64("test.int64"), INT64_MIN);
  EXPECT_EQ(*file_->GetInt64("test.uint32"), 4000000000);

  auto negative = file_->GetUint32("test.int8");
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(negative.status().message(),
              AllOf(HasSubstr("all_types.gguf"), HasSubstr("'test.int8'"), HasSubstr("int8 -100"),
                    HasSubstr("does not fit in uint32")));
  auto too_big = file_->GetInt32("test.uint32");
  EXPECT_THAT(too_big.status().message(), AllOf(HasSubstr("uint32 4000000000"), HasSubstr("int32")));
  EXPECT_FALSE(file_->GetInt64("test.uint64").ok());
  EXPECT_FALSE(file_->GetUint64("test.int64").ok());
}

TEST_F(GgufAccessorTest, WrongTypesNameWhatWasFoundAndWanted) {
  auto not_string = file_->GetString("test.uint32");
  EXPECT_EQ(not_string.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(not_string.status().message(),
              AllOf(HasSubstr("'test.uint32'"), HasSubstr("is uint32 4000000000"), HasSubstr("not a string")));
  EXPECT_THAT(file_->GetUint32("test.string").status().message(),
              AllOf(HasSubstr("'test.string'"), HasSubstr("is string"), HasSubstr("not an integer (uint32)")));
  EXPECT_THAT(file_->GetBool("test.float32").status().message(), HasSubstr("not a bool"));
  EXPECT_THAT(file_->GetFloat32("test.int32").status().message(), HasSubstr("not a floating-point number"));
  EXPECT_THAT(file_->GetUint32("test.bool_true").status().message(), HasSubstr("is bool true"));
  EXPECT_THAT(file_->GetArray("test.string").status().message(), HasSubstr("not an array"));

  auto missing = file_->GetUint32("llama.block_count");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), AllOf(HasSubstr("all_types.gguf"), HasSubstr("'llama.block_count'"),
                                                HasSubstr("missing")));
}

TEST_F(GgufAccessorTest, FloatsAndStrings) {
  EXPECT_FLOAT_EQ(*file_->GetFloat32("test.float32"), 0.15625f);
  EXPECT_DOUBLE_EQ(*file_->GetFloat64("test.float32"), 0.15625);
  EXPECT_DOUBLE_EQ(*file_->GetFloat64("test.float64"), -2.5e300);
  EXPECT_THAT(file_->GetFloat32("test.float64").status().message(), HasSubstr("does not fit in float32"));
  EXPECT_EQ(*file_->GetString("test.string_with_nul"), std::string_view("a\0b", 3));
  EXPECT_EQ(*file_->GetString("general.architecture"), "testarch");
  EXPECT_TRUE(*file_->GetBool("test.bool_true"));
  EXPECT_FALSE(*file_->GetBool("test.bool_false"));
}

TEST_F(GgufAccessorTest, ArraysOfAKind) {
  EXPECT_EQ(*file_->GetInt32Array("test.array_uint8"), (std::vector<int32_t>{0, 1, 255}));
  EXPECT_EQ(*file_->GetInt32Array("test.array_int16"), (std::vector<int32_t>{-5, 0, 300}));
  EXPECT_EQ(*file_->GetInt64Array("test.array_uint64"), (std::vector<int64_t>{1, int64_t{1} << 40}));
  auto narrow = file_->GetInt32Array("test.array_uint64");
  EXPECT_THAT(narrow.status().message(),
              AllOf(HasSubstr("'test.array_uint64'"), HasSubstr("element 1"), HasSubstr("does not fit in int32")));
  EXPECT_EQ(*file_->GetFloat32Array("test.array_float32"), (std::vector<float>{0.5f, -1.25f, 3.0f}));
  auto strings = file_->GetStringArray("test.array_string");
  ASSERT_TRUE(strings.ok()) << strings.status();
  EXPECT_THAT(*strings, ::testing::ElementsAre("", "a", "Ġthe", "日本"));
  EXPECT_THAT(file_->GetStringArray("test.array_int16").status().message(),
              AllOf(HasSubstr("'test.array_int16'"), HasSubstr("array of int16, not of string")));
  EXPECT_THAT(file_->GetInt32Array("test.array_string").status().message(), HasSubstr("array of string"));
  EXPECT_THAT(file_->GetInt32Array("test.array_bool").status().message(), HasSubstr("array of bool"));
  EXPECT_THAT(file_->GetStringArray("test.uint8").status().message(), HasSubstr("not an array"));
}

TEST_F(GgufAccessorTest, WeightsOfSupportedTypesAndRefusalOfTheRest) {
  auto f32 = file_->Weight("f32.weight");
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_EQ(f32->dtype, DType::kF32);
  EXPECT_EQ(f32->rows, 3);
  EXPECT_EQ(f32->cols, 4);
  ASSERT_EQ(f32->bytes.size(), 48u);
  float first_row[4];
  std::memcpy(first_row, f32->bytes.data(), sizeof(first_row));
  EXPECT_EQ(first_row[1], -0.75f);  // (1 / 4) - 1, as the fixture script wrote it

  auto experts = file_->Weight("bf16.experts");
  ASSERT_TRUE(experts.ok()) << experts.status();
  EXPECT_EQ(experts->dtype, DType::kBF16);
  EXPECT_EQ(experts->rows, 4);  // two experts of two rows
  EXPECT_EQ(experts->cols, 4);
  EXPECT_EQ(file_->Weight("f16.weight")->dtype, DType::kF16);

  auto quantized = file_->Weight("q8_0.weight");
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  EXPECT_EQ(quantized->dtype, DType::kQ8_0);
  EXPECT_EQ(quantized->rows, 2);
  EXPECT_EQ(quantized->cols, 64);
  EXPECT_EQ(quantized->bytes.size(), 2u * 2 * 34);  // two rows of two 32-blocks
  EXPECT_EQ(file_->Weight("missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(GgmlType, TableCoversEveryIdGgmlDefines) {
  int known = 0;
  for (uint32_t id = 0; id < 64; ++id) {
    const GgmlTypeInfo* info = FindGgmlType(id);
    const bool removed = id == 4 || id == 5 || (id >= 31 && id <= 33) || (id >= 36 && id <= 38) || id > 42;
    EXPECT_EQ(info == nullptr, removed) << "type id " << id;
    if (info == nullptr) continue;
    ++known;
    EXPECT_EQ(static_cast<uint32_t>(info->type), id);
    EXPECT_EQ(&GgmlTypeInfoOf(info->type), info);
    EXPECT_GT(info->block_elements, 0);
    EXPECT_GT(info->block_bytes, 0);
  }
  EXPECT_EQ(known, 35);
  // The quantised formats expertd plans to compute with, from ggml-common.h's
  // block structs.
  EXPECT_EQ(GgmlTypeInfoOf(GgmlType::kQ8_0).block_bytes, 34);
  EXPECT_EQ(GgmlTypeInfoOf(GgmlType::kQ4_0).block_bytes, 18);
  EXPECT_EQ(GgmlTypeInfoOf(GgmlType::kQ4_K).block_bytes, 144);
  EXPECT_EQ(GgmlTypeInfoOf(GgmlType::kQ5_K).block_bytes, 176);
  EXPECT_EQ(GgmlTypeInfoOf(GgmlType::kQ6_K).block_bytes, 210);
  EXPECT_EQ(GgmlTypeInfoOf(GgmlType::kQ6_K).block_elements, 256);
  EXPECT_EQ(GgmlTypeInfoOf(GgmlType::kMXFP4).block_bytes, 17);
  EXPECT_EQ(GgmlTypeName(GgmlType::kIQ4_XS), "IQ4_XS");
}

TEST(GgmlType, MapsTheTypesExpertdComputesWithAndRefusesTheRest) {
  EXPECT_EQ(*GgmlTypeToDType(GgmlType::kF32), DType::kF32);
  EXPECT_EQ(*GgmlTypeToDType(GgmlType::kF16), DType::kF16);
  EXPECT_EQ(*GgmlTypeToDType(GgmlType::kBF16), DType::kBF16);
  EXPECT_EQ(*GgmlTypeToDType(GgmlType::kQ8_0), DType::kQ8_0);
  EXPECT_EQ(*GgmlTypeToDType(GgmlType::kQ4_0), DType::kQ4_0);
  EXPECT_EQ(*GgmlTypeToDType(GgmlType::kQ4_K), DType::kQ4_K);
  EXPECT_EQ(*GgmlTypeToDType(GgmlType::kQ5_K), DType::kQ5_K);
  EXPECT_EQ(*GgmlTypeToDType(GgmlType::kQ6_K), DType::kQ6_K);
  EXPECT_EQ(*GgmlTypeToDType(GgmlType::kMXFP4), DType::kMXFP4);
  // Each DType's block has GGML's size, so a tensor's bytes are the same.
  for (GgmlType type :
       {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K, GgmlType::kMXFP4}) {
    EXPECT_EQ(GgmlTypeInfoOf(type).block_bytes, DTypeBlockBytes(*GgmlTypeToDType(type))) << GgmlTypeName(type);
    EXPECT_EQ(GgmlTypeInfoOf(type).block_elements, DTypeBlockElements(*GgmlTypeToDType(type))) << GgmlTypeName(type);
  }
  auto q2k = GgmlTypeToDType(GgmlType::kQ2_K);
  EXPECT_EQ(q2k.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(q2k.status().message(), HasSubstr("Q2_K"));
  EXPECT_FALSE(GgmlTypeToDType(GgmlType::kIQ4_NL).ok());
  EXPECT_FALSE(GgmlTypeToDType(GgmlType::kF64).ok());
}

// --- Corrupt files -------------------------------------------------------

// Writes GGUF structures byte by byte.
class Bytes {
 public:
  Bytes& U32(uint32_t v) { return Raw(&v, 4); }
  Bytes& U64(uint64_t v) { return Raw(&v, 8); }
  Bytes& Str(std::string_view s) {
    U64(s.size());
    bytes_.append(s);
    return *this;
  }
  Bytes& Header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    bytes_.append("GGUF");
    return U32(version).U64(tensors).U64(kvs);
  }
  Bytes& KeyU32(std::string_view key, uint32_t value) { return Str(key).U32(4).U32(value); }
  Bytes& Tensor(std::string_view name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) U64(d);
    return U32(type).U64(offset);
  }
  // Zeros up to the next multiple of `alignment`, then `n` data bytes.
  Bytes& Data(uint64_t n, uint64_t alignment = 32) {
    bytes_.resize((bytes_.size() + alignment - 1) / alignment * alignment, '\0');
    bytes_.append(n, '\x5a');
    return *this;
  }
  const std::string& str() const { return bytes_; }

 private:
  Bytes& Raw(const void* p, size_t n) {
    bytes_.append(static_cast<const char*>(p), n);
    return *this;
  }
  std::string bytes_;
};

// Opens `bytes` as a file; expects an error of `code` whose message has every
// one of `parts`.
void ExpectRefused(const std::string& bytes, absl::StatusCode code, std::vector<std::string> parts) {
  ScratchFile scratch;
  auto opened = GgufFile::Open(scratch.Write(bytes));
  ASSERT_FALSE(opened.ok()) << "accepted a file that should fail with: " << parts[0];
  EXPECT_EQ(opened.status().code(), code) << opened.status();
  EXPECT_THAT(std::string(opened.status().message()), HasSubstr(scratch.path()));
  for (const std::string& part : parts) EXPECT_THAT(std::string(opened.status().message()), HasSubstr(part));
}

TEST(GgufCorrupt, TheBuilderMakesAValidFile) {
  // The baseline every corruption below departs from.
  const std::string bytes =
      Bytes().Header(1, 1).KeyU32("k", 1).Tensor("t", {4, 2}, 0, 0).Data(32).str();
  ScratchFile scratch;
  auto opened = GgufFile::Open(scratch.Write(bytes));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ((*opened)->tensors()[0].size_bytes, 32u);
  EXPECT_EQ((*opened)->tensors()[0].rows, 2);
}

TEST(GgufCorrupt, EveryTruncationOfARealFileIsRefusedUntilTheLastTensorIsWhole) {
  const std::string whole = ReadAll(kTestdata + "/all_types.gguf");
  ASSERT_FALSE(whole.empty());
  // The last tensor's end: past it only the writer's trailing padding lies.
  auto opened = GgufFile::Open(kTestdata + "/all_types.gguf");
  ASSERT_TRUE(opened.ok());
  uint64_t data_end = 0;
  for (const auto& t : (*opened)->tensors()) data_end = std::max(data_end, t.file_offset + t.size_bytes);
  ScratchFile scratch;
  for (size_t length = 0; length <= whole.size(); ++length) {
    auto file = GgufFile::Open(scratch.Write(whole.substr(0, length)));
    if (length < data_end) {
      ASSERT_FALSE(file.ok()) << "accepted the first " << length << " bytes";
      ASSERT_EQ(file.status().code(), absl::StatusCode::kDataLoss) << file.status();
      ASSERT_THAT(std::string(file.status().message()), HasSubstr(scratch.path())) << length;
    } else {
      ASSERT_TRUE(file.ok()) << length << ": " << file.status();
    }
  }
}

TEST(GgufCorrupt, TruncationNamesWhereTheFileEnded) {
  const std::string whole = Bytes().Header(0, 1).Str("general.name").U32(8).Str("abcdef").str();
  ExpectRefused(whole.substr(0, whole.size() - 2), absl::StatusCode::kDataLoss,
                {"metadata key 'general.name' (at byte 24)", "6 bytes long", "only 4 bytes"});
  const std::string two = Bytes().Header(0, 2).KeyU32("a_long_key_name_here", 1).U64(5).str();
  ExpectRefused(two.substr(0, two.size() - 5), absl::StatusCode::kDataLoss,
                {"metadata key/value #1 at byte 60", "needs 8 bytes", "ends at byte 63"});
  ExpectRefused(std::string("GGUF\3\0\0\0", 8), absl::StatusCode::kDataLoss, {"shorter than the 24-byte header"});
  ExpectRefused("", absl::StatusCode::kDataLoss, {"magic"});
}

TEST(GgufCorrupt, VersionsAndMagic) {
  ExpectRefused(Bytes().Header(0, 0, 1).str(), absl::StatusCode::kUnimplemented,
                {"GGUF version 1", "versions 2 and 3", "convert the model again"});
  ExpectRefused(Bytes().Header(0, 0, 4).str(), absl::StatusCode::kUnimplemented, {"GGUF version 4"});
  ExpectRefused(Bytes().Header(0, 0, 0x03000000).str(), absl::StatusCode::kUnimplemented, {"big-endian"});
  std::string ggml = Bytes().Header(0, 0).str();
  ggml[3] = 'L';
  ExpectRefused(ggml, absl::StatusCode::kDataLoss, {"magic bytes \"GGUF\""});
}

TEST(GgufCorrupt, HugeCountsAreRefusedBeforeAnythingIsAllocated) {
  ExpectRefused(Bytes().Header(uint64_t{1} << 62, 0).str(), absl::StatusCode::kDataLoss,
                {"claims 4611686018427387904 tensors"});
  ExpectRefused(Bytes().Header(0, ~uint64_t{0}).str(), absl::StatusCode::kDataLoss,
                {"claims 18446744073709551615 metadata key/values"});
  ExpectRefused(Bytes().Header(0, 1).Str("k").U32(9).U32(0).U64(uint64_t{1} << 61).str(),
                absl::StatusCode::kDataLoss, {"metadata key 'k'", "claims 2305843009213693952 elements of uint8"});
  ExpectRefused(Bytes().Header(0, 1).Str("k").U32(9).U32(8).U64(1000).U64(0).str(), absl::StatusCode::kDataLoss,
                {"claims 1000 elements of string"});
  ExpectRefused(Bytes().Header(0, 1).U64(~uint64_t{0}).U64(0).str(), absl::StatusCode::kDataLoss,
                {"18446744073709551615 bytes long"});
}

TEST(GgufCorrupt, BadValueTypesAndDeepNesting) {
  ExpectRefused(Bytes().Header(0, 1).Str("k").U32(13).U32(0).str(), absl::StatusCode::kDataLoss,
                {"metadata key 'k'", "13, which is not a GGUF value type"});
  ExpectRefused(Bytes().Header(0, 1).Str("k").U32(9).U32(77).U64(0).str(), absl::StatusCode::kDataLoss,
                {"element type", "77"});
  Bytes nested;
  nested.Header(0, 1).Str("deep").U32(9);
  for (int i = 0; i < kGgufMaxArrayDepth + 2; ++i) nested.U32(9).U64(1);
  ExpectRefused(nested.str(), absl::StatusCode::kDataLoss, {"metadata key 'deep'", "nested more than 16"});
  ExpectRefused(Bytes().Header(0, 2).KeyU32("k", 1).KeyU32("k", 2).str(), absl::StatusCode::kDataLoss,
                {"'k'", "appears twice"});
}

TEST(GgufCorrupt, Alignment) {
  ExpectRefused(Bytes().Header(0, 1).KeyU32("general.alignment", 48).str(), absl::StatusCode::kDataLoss,
                {"general.alignment", "48, not a power of two"});
  ExpectRefused(Bytes().Header(0, 1).KeyU32("general.alignment", 0).str(), absl::StatusCode::kDataLoss,
                {"not a power of two"});
  ExpectRefused(Bytes().Header(0, 1).Str("general.alignment").U32(8).Str("64").str(), absl::StatusCode::kDataLoss,
                {"'general.alignment'", "is string \"64\", not an integer"});
  ExpectRefused(Bytes().Header(1, 0).Tensor("t", {8}, 0, 16).Data(64).str(), absl::StatusCode::kDataLoss,
                {"tensor 't'", "data offset 16", "not a multiple of the alignment 32"});
  // With general.alignment 16 the same offset is fine.
  ScratchFile scratch;
  auto ok = GgufFile::Open(scratch.Write(
      Bytes().Header(1, 1).KeyU32("general.alignment", 16).Tensor("t", {8}, 0, 16).Data(64, 16).str()));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->alignment(), 16u);
  EXPECT_EQ((*ok)->data_offset() % 16, 0u);
}

TEST(GgufCorrupt, TensorInfos) {
  ExpectRefused(Bytes().Header(1, 0).Tensor("t", {1, 1, 1, 1, 1}, 0, 0).Data(4).str(), absl::StatusCode::kDataLoss,
                {"tensor 't' (info at byte 24)", "5 dimensions"});
  ExpectRefused(Bytes().Header(1, 0).Tensor("t", {uint64_t{1} << 63}, 0, 0).str(), absl::StatusCode::kDataLoss,
                {"tensor 't'", "beyond int64"});
  ExpectRefused(Bytes().Header(1, 0).Tensor("t", {uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0).str(),
                absl::StatusCode::kDataLoss, {"tensor 't'", "overflows"});
  ExpectRefused(Bytes().Header(1, 0).Tensor("t", {0, uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0).str(),
                absl::StatusCode::kDataLoss, {"tensor 't'", "overflows"});
  ExpectRefused(Bytes().Header(1, 0).Tensor("t", {8}, 4, 0).Data(64).str(), absl::StatusCode::kDataLoss,
                {"tensor 't'", "GGML type id 4", "not one GGML defines"});
  ExpectRefused(Bytes().Header(1, 0).Tensor("t", {33, 2}, 8, 0).Data(256).str(), absl::StatusCode::kDataLoss,
                {"tensor 't'", "row of 33 elements", "Q8_0 blocks (32 elements each)"});
  ExpectRefused(Bytes().Header(2, 0).Tensor("t", {8}, 0, 0).Tensor("t", {8}, 0, 32).Data(64).str(),
                absl::StatusCode::kDataLoss, {"tensor 't'", "second tensor with this name"});
  ExpectRefused(Bytes().Header(2, 0).Tensor("a", {16}, 0, 0).Tensor("b", {8}, 0, 32).Data(96).str(),
                absl::StatusCode::kDataLoss, {"'a'", "'b'", "overlap"});
  ExpectRefused(Bytes().Header(1, 0).Tensor("t", {8}, 0, 0).Data(31).str(), absl::StatusCode::kDataLoss,
                {"tensor 't'", "32 bytes", "past the end of the file"});
  ExpectRefused(Bytes().Header(1, 0).Tensor("t", {8}, 0, uint64_t{1} << 63).Data(32).str(),
                absl::StatusCode::kDataLoss, {"tensor 't'", "past the end of the file"});
}

TEST(GgufCorrupt, NotARegularFileOrMissing) {
  auto missing = GgufFile::Open(kTestdata + "/does_not_exist.gguf");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("does_not_exist.gguf"));
  EXPECT_EQ(GgufFile::Open(kTestdata).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace expertd::formats
