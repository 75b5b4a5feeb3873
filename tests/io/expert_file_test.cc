#include "io/expert_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io/aligned_buffer.h"
#include "io/expert_reader.h"
#include "tests/io/io_test_util.h"

namespace expertd::io {
namespace {

using ::expertd::io::testing::ReadSync;
using ::expertd::io::testing::ScratchDir;

constexpr uint64_t kFingerprint = 0x1234abcd5678ef90ull;

// Four layers of three experts; layer 0 is dense (no routed experts).
// expert_bytes = 3 * 64 * 24 * 2 = 9216, so each slot carries 3072 bytes of
// padding up to 12288.
ExpertFileLayout TestLayout() {
  ExpertFileLayout layout;
  layout.model_fingerprint = kFingerprint;
  layout.dtype = DType::kBF16;
  layout.num_layers = 4;
  layout.num_experts = 3;
  layout.hidden_size = 64;
  layout.intermediate_size = 24;
  layout.alignment = 4096;
  return layout;
}

std::vector<std::byte> Bundle(const ExpertFileLayout& layout, int layer, int expert) {
  std::vector<std::byte> bundle(layout.expert_bytes());
  std::mt19937 rng(static_cast<unsigned>(layer * 100 + expert));
  for (auto& b : bundle) b = static_cast<std::byte>(rng());
  return bundle;
}

std::vector<std::byte> ReadBytes(const std::string& path, uint64_t offset, uint64_t length) {
  std::vector<std::byte> data(length);
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(length));
  return data;
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

class ExpertFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("model.experts");
    auto writer = ExpertFileWriter::Create(path_, layout_);
    ASSERT_TRUE(writer.ok()) << writer.status();
    // Out of order, as a packer walking safetensors shards would add them.
    std::vector<std::pair<int, int>> order;
    for (int layer = 1; layer < 4; ++layer) {
      for (int expert = 0; expert < 3; ++expert) order.emplace_back(layer, expert);
    }
    std::shuffle(order.begin(), order.end(), std::mt19937(3));
    for (auto [layer, expert] : order) {
      ASSERT_TRUE((*writer)->Add(layer, expert, Bundle(layout_, layer, expert)).ok());
    }
    ASSERT_TRUE((*writer)->Finish().ok());
  }

  std::string Copy(const std::string& name) {
    std::string copy = dir_.File(name);
    std::filesystem::copy_file(path_, copy, std::filesystem::copy_options::overwrite_existing);
    return copy;
  }

  ScratchDir dir_{"file"};
  ExpertFileLayout layout_ = TestLayout();
  std::string path_;
};

TEST_F(ExpertFileTest, RoundTrip) {
  auto file = ExpertFile::Open(path_, kFingerprint);
  ASSERT_TRUE(file.ok()) << file.status();
  const ExpertFileLayout& l = (*file)->layout();
  EXPECT_EQ(l.model_fingerprint, kFingerprint);
  EXPECT_EQ(l.dtype, DType::kBF16);
  EXPECT_EQ(l.num_layers, 4u);
  EXPECT_EQ(l.num_experts, 3u);
  EXPECT_EQ(l.expert_bytes(), 9216u);
  EXPECT_EQ(l.slot_bytes(), 12288u);
  EXPECT_EQ(std::filesystem::file_size(path_) % 4096, 0u);
  for (int layer = 1; layer < 4; ++layer) {
    for (int expert = 0; expert < 3; ++expert) {
      auto extent = (*file)->Find(layer, expert);
      ASSERT_TRUE(extent.ok()) << extent.status();
      EXPECT_EQ(extent->offset % 4096, 0u);
      EXPECT_EQ(extent->length, l.expert_bytes());
      std::vector<std::byte> bytes = ReadBytes(path_, extent->offset, extent->length);
      EXPECT_EQ(bytes, Bundle(layout_, layer, expert)) << "layer " << layer << " expert " << expert;
      EXPECT_TRUE((*file)->Verify(layer, expert, bytes).ok());
    }
  }
}

// The path the cache takes: whole slots read with O_DIRECT, then verified.
TEST_F(ExpertFileTest, SlotsReadWithODirectVerify) {
  auto file = ExpertFile::Open(path_, std::nullopt);
  ASSERT_TRUE(file.ok()) << file.status();
  ReaderOptions options;
  options.path = path_;
  auto reader = OpenExpertReader(options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto slot = AlignedBuffer::Allocate((*file)->layout().slot_bytes());
  ASSERT_TRUE(slot.ok());
  for (int expert = 0; expert < 3; ++expert) {
    auto extent = (*file)->Find(2, expert);
    ASSERT_TRUE(extent.ok());
    ASSERT_TRUE(ReadSync(**reader, extent->offset, slot->size(), slot->data()).ok());
    EXPECT_TRUE((*file)->Verify(2, expert, absl::MakeConstSpan(slot->data(), slot->size())).ok());
  }
}

TEST_F(ExpertFileTest, AbsentExpertIsNotFoundNamingIt) {
  auto file = ExpertFile::Open(path_, kFingerprint);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::Status status = (*file)->Find(0, 1).status();
  EXPECT_TRUE(absl::IsNotFound(status)) << status;
  EXPECT_NE(status.message().find("layer 0 expert 1"), absl::string_view::npos) << status;
  EXPECT_FALSE((*file)->Find(4, 0).ok());
  EXPECT_FALSE((*file)->Find(1, 3).ok());
  EXPECT_FALSE((*file)->Find(-1, 0).ok());
}

TEST_F(ExpertFileTest, FingerprintMismatchIsAnError) {
  absl::Status status = ExpertFile::Open(path_, kFingerprint + 1).status();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("fingerprint"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find(path_), absl::string_view::npos) << status;
}

TEST_F(ExpertFileTest, TruncatedFileFailsAtOpen) {
  const uint64_t size = std::filesystem::file_size(path_);
  for (uint64_t cut : {uint64_t{0}, uint64_t{100}, uint64_t{4095}, uint64_t{4096}, uint64_t{4200}, uint64_t{8192},
                       uint64_t{8192 + 5000}, size / 2, size - 4096, size - 1}) {
    std::string copy = Copy("truncated");
    std::filesystem::resize_file(copy, cut);
    absl::Status status = ExpertFile::Open(copy, kFingerprint).status();
    EXPECT_TRUE(absl::IsDataLoss(status)) << "cut at " << cut << ": " << status;
  }
  // A cut inside the bundles names the first expert that no longer fits.
  std::string copy = Copy("truncated");
  std::filesystem::resize_file(copy, size - 1);
  absl::Status status = ExpertFile::Open(copy, kFingerprint).status();
  EXPECT_NE(status.message().find("truncated"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find("expert"), absl::string_view::npos) << status;
}

TEST_F(ExpertFileTest, CorruptedBundleByteFailsVerifyNamingTheExpert) {
  auto extent = [&] {
    auto file = ExpertFile::Open(path_, kFingerprint);
    return *(*file)->Find(2, 1);
  }();
  FlipByte(path_, extent.offset + 777);
  auto file = ExpertFile::Open(path_, kFingerprint);
  ASSERT_TRUE(file.ok()) << file.status();  // bundles are checked on load, not at Open
  std::vector<std::byte> bytes = ReadBytes(path_, extent.offset, extent.length);
  absl::Status status = (*file)->Verify(2, 1, bytes);
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_NE(status.message().find("layer 2 expert 1"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find(path_), absl::string_view::npos) << status;
  EXPECT_TRUE((*file)->Verify(2, 0, ReadBytes(path_, (*file)->Find(2, 0)->offset, extent.length)).ok());
}

TEST_F(ExpertFileTest, CorruptedHeaderOrIndexFailsAtOpen) {
  for (uint64_t offset : {uint64_t{0}, uint64_t{9}, uint64_t{20}, uint64_t{30}, uint64_t{200}, uint64_t{4095},
                          uint64_t{4096 + 30}}) {
    std::string copy = Copy("corrupt");
    FlipByte(copy, offset);
    absl::Status status = ExpertFile::Open(copy, std::nullopt).status();
    EXPECT_TRUE(absl::IsDataLoss(status)) << "byte " << offset << ": " << status;
    EXPECT_NE(status.message().find(copy), absl::string_view::npos) << status;
  }
  std::string copy = Copy("corrupt");
  FlipByte(copy, 20);  // inside the fingerprint
  absl::Status status = ExpertFile::Open(copy, std::nullopt).status();
  EXPECT_NE(status.message().find("header"), absl::string_view::npos) << status;
}

// A dtype number the format does not define, under a header checksum that
// matches (so the dtype itself is what is refused).
TEST_F(ExpertFileTest, UnknownDtypeNumberFailsAtOpenNamingIt) {
  std::string copy = Copy("dtype9");
  std::vector<std::byte> header = ReadBytes(copy, 0, 4096);
  header[24] = std::byte{9};  // the dtype field (FORMAT.md): 0-8 are taken
  const uint64_t checksum = Xxh64(absl::MakeConstSpan(header.data(), 4088));
  for (int i = 0; i < 8; ++i) header[4088 + i] = static_cast<std::byte>(checksum >> (8 * i));
  {
    std::fstream f(copy, std::ios::binary | std::ios::in | std::ios::out);
    f.write(reinterpret_cast<const char*>(header.data()), static_cast<std::streamsize>(header.size()));
  }
  absl::Status status = ExpertFile::Open(copy, std::nullopt).status();
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_NE(status.message().find(copy), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find("unknown dtype 9 (0 = f32, 1 = bf16, 2 = f16, 3 = q8_0, 4 = q4_0, 5 = q4_k, "
                                  "6 = q5_k, 7 = q6_k, 8 = mxfp4)"),
            absl::string_view::npos)
      << status;
}

TEST_F(ExpertFileTest, MissingFileNamesIt) {
  absl::Status status = ExpertFile::Open(dir_.File("absent.experts"), std::nullopt).status();
  EXPECT_TRUE(absl::IsNotFound(status)) << status;
  EXPECT_NE(status.message().find("absent.experts"), absl::string_view::npos) << status;
}

TEST(ExpertFileWriterTest, InterruptedWriterLeavesNothing) {
  ScratchDir dir("writer");
  const ExpertFileLayout layout = TestLayout();
  {
    auto writer = ExpertFileWriter::Create(dir.File("model.experts"), layout);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Add(1, 0, Bundle(layout, 1, 0)).ok());
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "leftovers in " << dir.path();
}

TEST(ExpertFileWriterTest, RejectsBadInput) {
  ScratchDir dir("writer_bad");
  ExpertFileLayout layout = TestLayout();
  layout.alignment = 1000;
  EXPECT_TRUE(absl::IsInvalidArgument(ExpertFileWriter::Create(dir.File("x"), layout).status()));
  layout = TestLayout();
  auto writer = ExpertFileWriter::Create(dir.File("x"), layout);
  ASSERT_TRUE(writer.ok());
  std::vector<std::byte> small(100);
  EXPECT_TRUE(absl::IsInvalidArgument((*writer)->Add(1, 0, small)));
  EXPECT_TRUE(absl::IsInvalidArgument((*writer)->Add(4, 0, Bundle(layout, 1, 0))));
  ASSERT_TRUE((*writer)->Add(1, 0, Bundle(layout, 1, 0)).ok());
  EXPECT_TRUE(absl::IsAlreadyExists((*writer)->Add(1, 0, Bundle(layout, 1, 0))));
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_FALSE((*writer)->Finish().ok());
  auto file = ExpertFile::Open(dir.File("x"), std::nullopt);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->Find(1, 0).ok());
  EXPECT_TRUE(absl::IsNotFound((*file)->Find(2, 0).status()));
}

// The header holds the format's dtype numbers (FORMAT.md), not DType's
// enumerator values, and they read back as the same DType.
TEST(ExpertFileWriterTest, DtypeIsStoredAsTheFormatsNumber) {
  ScratchDir dir("writer_dtype");
  const std::pair<DType, uint8_t> numbers[] = {{DType::kF32, 0}, {DType::kBF16, 1}, {DType::kF16, 2}};
  for (auto [dtype, number] : numbers) {
    SCOPED_TRACE(DTypeName(dtype));
    ExpertFileLayout layout = TestLayout();
    layout.dtype = dtype;
    const std::string path = dir.File(std::string(DTypeName(dtype)));
    auto writer = ExpertFileWriter::Create(path, layout);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Add(1, 0, Bundle(layout, 1, 0)).ok());
    ASSERT_TRUE((*writer)->Finish().ok());
    EXPECT_EQ(ReadBytes(path, 24, 4), (std::vector<std::byte>{std::byte{number}, {}, {}, {}}));
    auto file = ExpertFile::Open(path, kFingerprint);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->layout().dtype, dtype);
    EXPECT_EQ((*file)->layout().expert_bytes(), static_cast<uint64_t>(3 * 64 * 24 * DTypeBytes(dtype, 1)));
  }
}

// GGML's block formats have numbers 3-7; their matrices are whole blocks
// per row, so the expert takes row / block * block bytes per row, and a
// width that is not whole blocks is refused at Create, naming the block.
TEST(ExpertFileWriterTest, BlockFormatsStoreWholeBlocksPerRow) {
  ScratchDir dir("writer_blocks");
  const std::pair<DType, uint8_t> numbers[] = {
      {DType::kQ8_0, 3}, {DType::kQ4_0, 4}, {DType::kQ4_K, 5}, {DType::kQ5_K, 6}, {DType::kQ6_K, 7}};
  for (auto [dtype, number] : numbers) {
    SCOPED_TRACE(DTypeName(dtype));
    ExpertFileLayout layout = TestLayout();
    layout.dtype = dtype;
    layout.hidden_size = 256;
    layout.intermediate_size = 512;
    const std::string path = dir.File(std::string(DTypeName(dtype)));
    auto writer = ExpertFileWriter::Create(path, layout);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Add(1, 0, Bundle(layout, 1, 0)).ok());
    ASSERT_TRUE((*writer)->Finish().ok());
    EXPECT_EQ(ReadBytes(path, 24, 4), (std::vector<std::byte>{std::byte{number}, {}, {}, {}}));
    auto file = ExpertFile::Open(path, kFingerprint);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->layout().dtype, dtype);
    EXPECT_EQ((*file)->layout().expert_bytes(),
              static_cast<uint64_t>(3 * 256 * 512 / DTypeBlockElements(dtype) * DTypeBlockBytes(dtype)));

    layout.intermediate_size = 24;  // not whole blocks
    auto refused = ExpertFileWriter::Create(dir.File("refused"), layout);
    ASSERT_FALSE(refused.ok());
    EXPECT_THAT(std::string(refused.status().message()),
                ::testing::HasSubstr(absl::StrCat("blocks of ", DTypeBlockElements(dtype), " elements")));
  }
}

TEST(ExpertFileWriterTest, LargerAlignmentPadsSlots) {
  ScratchDir dir("writer_align");
  ExpertFileLayout layout = TestLayout();
  layout.alignment = 65536;
  auto writer = ExpertFileWriter::Create(dir.File("x"), layout);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Add(3, 2, Bundle(layout, 3, 2)).ok());
  ASSERT_TRUE((*writer)->Add(1, 1, Bundle(layout, 1, 1)).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  auto file = ExpertFile::Open(dir.File("x"), kFingerprint);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->layout().slot_bytes(), 65536u);
  EXPECT_EQ((*file)->Find(3, 2)->offset % 65536, 0u);
  EXPECT_EQ(ReadBytes(dir.File("x"), (*file)->Find(1, 1)->offset, layout.expert_bytes()), Bundle(layout, 1, 1));
}

TEST(Xxh64Test, MatchesReferenceValues) {
  EXPECT_EQ(Xxh64({}), 0xEF46DB3751D8E999ull);
  const char* abc = "abc";
  EXPECT_EQ(Xxh64(absl::MakeConstSpan(reinterpret_cast<const std::byte*>(abc), 3)), 0x44BC2CF5AD770999ull);
}

TEST(AlignedBufferTest, PageAlignedZeroedAndMovable) {
  auto buffer = AlignedBuffer::Allocate(10000);
  ASSERT_TRUE(buffer.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer->data()) % 4096, 0u);
  EXPECT_EQ(buffer->size(), 10000u);
  EXPECT_EQ(buffer->data()[9999], std::byte{0});
  std::byte* data = buffer->data();
  AlignedBuffer moved = std::move(*buffer);
  EXPECT_EQ(moved.data(), data);
  EXPECT_EQ(buffer->data(), nullptr);
  AlignedBuffer assigned;
  assigned = std::move(moved);
  EXPECT_EQ(assigned.data(), data);
  EXPECT_EQ(AlignedBuffer::Allocate(0)->data(), nullptr);
}

}  // namespace
}  // namespace expertd::io
