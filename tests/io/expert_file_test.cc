#include "io/expert_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io/aligned_buffer.h"
#include "io/bundle_verifier.h"
#include "io/expert_reader.h"
#include "tests/io/io_test_util.h"
#include "tests/testing/expert_file_v1.h"

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
  layout.dtypes = BundleDtypes::Uniform(DType::kBF16);
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
  EXPECT_EQ((*file)->version(), 3u);
  EXPECT_EQ(l.model_fingerprint, kFingerprint);
  EXPECT_EQ(l.dtypes, BundleDtypes::Uniform(DType::kBF16));
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
      EXPECT_EQ(extent->dtypes, BundleDtypes::Uniform(DType::kBF16));
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

// The cache's verified reads arrive in pieces (io/bundle_verifier.h): any
// order of arrival gives the one verdict, and only the last piece's
// Arrived says so.
TEST_F(ExpertFileTest, BundleVerifierAcceptsPiecesInAnyOrder) {
  auto file = ExpertFile::Open(path_, kFingerprint);
  ASSERT_TRUE(file.ok()) << file.status();
  const ExpertExtent extent = *(*file)->Find(2, 1);
  const uint64_t read_bytes = layout_.slot_bytes();  // the bundle and its padding
  std::vector<std::byte> slot = ReadBytes(path_, extent.offset, read_bytes);
  std::vector<int> order = {0, 1, 2};
  do {
    auto verifier = BundleVerifier::Start(**file, 2, 1, slot.data(), read_bytes, 4096);
    ASSERT_TRUE(verifier.ok()) << verifier.status();
    ASSERT_EQ((*verifier)->pieces(), 3);
    EXPECT_EQ((*verifier)->piece_length(2), 4096u);
    for (size_t i = 0; i < order.size(); ++i) {
      EXPECT_EQ((*verifier)->Arrived(order[i], absl::OkStatus()), i + 1 == order.size());
    }
    EXPECT_TRUE((*verifier)->result().ok()) << (*verifier)->result();
    EXPECT_FALSE((*verifier)->checksum_failed());
  } while (std::next_permutation(order.begin(), order.end()));
}

TEST_F(ExpertFileTest, BundleVerifierFindsACorruptPieceAndPassesReadErrorsOn) {
  auto file = ExpertFile::Open(path_, kFingerprint);
  ASSERT_TRUE(file.ok()) << file.status();
  const ExpertExtent extent = *(*file)->Find(3, 2);
  const uint64_t read_bytes = layout_.slot_bytes();
  const std::vector<std::byte> good = ReadBytes(path_, extent.offset, read_bytes);
  const auto verdict = [&](const std::vector<std::byte>& slot, int failing_piece) {
    auto verifier = BundleVerifier::Start(**file, 3, 2, slot.data(), read_bytes, 1000);
    EXPECT_TRUE(verifier.ok()) << verifier.status();
    std::unique_ptr<BundleVerifier> v = std::move(*verifier);
    EXPECT_EQ(v->pieces(), 13);  // 12288 bytes in pieces of 1000
    EXPECT_EQ(v->piece_length(12), 288u);
    for (int piece = v->pieces() - 1; piece >= 0; --piece) {
      v->Arrived(piece, piece == failing_piece ? absl::DataLossError("short read at offset 1234") : absl::OkStatus());
    }
    return std::make_pair(v->result(), v->checksum_failed());
  };
  std::vector<std::byte> corrupt = good;
  corrupt[5555] ^= std::byte{1};
  auto [status, checksum_failed] = verdict(corrupt, -1);
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_TRUE(checksum_failed);
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("layer 3 expert 2"));
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("is corrupt"));
  // Padding past the bundle is not hashed.
  std::vector<std::byte> padded = good;
  padded[extent.length + 5] ^= std::byte{1};
  EXPECT_TRUE(verdict(padded, -1).first.ok());
  // A failed read is the verdict, not a checksum failure.
  std::tie(status, checksum_failed) = verdict(good, 4);
  EXPECT_EQ(status.message(), "short read at offset 1234");
  EXPECT_FALSE(checksum_failed);
}

// Pieces complete on several threads at once (the pread reader's pool).
TEST_F(ExpertFileTest, BundleVerifierTakesPiecesFromManyThreads) {
  auto file = ExpertFile::Open(path_, kFingerprint);
  ASSERT_TRUE(file.ok()) << file.status();
  const ExpertExtent extent = *(*file)->Find(1, 0);
  const std::vector<std::byte> slot = ReadBytes(path_, extent.offset, layout_.slot_bytes());
  for (int round = 0; round < 20; ++round) {
    auto verifier = BundleVerifier::Start(**file, 1, 0, slot.data(), slot.size(), 256);
    ASSERT_TRUE(verifier.ok()) << verifier.status();
    std::vector<int> order((*verifier)->pieces());
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(round));
    std::atomic<int> finished{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (size_t i = t; i < order.size(); i += 4) finished += (*verifier)->Arrived(order[i], absl::OkStatus());
      });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_EQ(finished.load(), 1);
    EXPECT_TRUE((*verifier)->result().ok()) << (*verifier)->result();
  }
}

TEST_F(ExpertFileTest, BundleVerifierRefusesWhatItCannotCheck) {
  auto file = ExpertFile::Open(path_, kFingerprint);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::byte> slot(layout_.slot_bytes());
  EXPECT_TRUE(absl::IsNotFound(BundleVerifier::Start(**file, 0, 0, slot.data(), slot.size(), 4096).status()))
      << "layer 0 is dense: no bundle";
  EXPECT_TRUE(absl::IsInvalidArgument(BundleVerifier::Start(**file, 1, 0, slot.data(), slot.size(), 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(BundleVerifier::Start(**file, 1, 0, slot.data(), 4096, 4096).status()))
      << "a read shorter than the bundle";
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
    layout.dtypes = BundleDtypes::Uniform(dtype);
    const std::string path = dir.File(std::string(DTypeName(dtype)));
    auto writer = ExpertFileWriter::Create(path, layout);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Add(1, 0, Bundle(layout, 1, 0)).ok());
    ASSERT_TRUE((*writer)->Finish().ok());
    // Version 2: the slot's gate, up and down numbers, then a zero byte.
    const std::byte n{number};
    EXPECT_EQ(ReadBytes(path, 24, 4), (std::vector<std::byte>{n, n, n, {}}));
    auto file = ExpertFile::Open(path, kFingerprint);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->layout().dtypes, BundleDtypes::Uniform(dtype));
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
    layout.dtypes = BundleDtypes::Uniform(dtype);
    layout.hidden_size = 256;
    layout.intermediate_size = 512;
    const std::string path = dir.File(std::string(DTypeName(dtype)));
    auto writer = ExpertFileWriter::Create(path, layout);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Add(1, 0, Bundle(layout, 1, 0)).ok());
    ASSERT_TRUE((*writer)->Finish().ok());
    const std::byte n{number};
    EXPECT_EQ(ReadBytes(path, 24, 4), (std::vector<std::byte>{n, n, n, {}}));
    auto file = ExpertFile::Open(path, kFingerprint);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->layout().dtypes, BundleDtypes::Uniform(dtype));
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

// ---------------------------------------------------------------------------
// Version 2: gate, up and down of each bundle in their own dtypes.

// A Q4_K_M-shaped file: the slot is q4_k/q4_k/q6_k (the widest of each
// matrix); layer 1's experts are that, layer 2's q4_k throughout, as
// llama.cpp mixes them per layer. hidden 256, ffn 512: a q4_k matrix is
// 512 rows of one 144-byte block = 73728 bytes, a q6_k down 256 rows of two
// 210-byte blocks = 107520.
constexpr BundleDtypes kQ4KM{DType::kQ4_K, DType::kQ4_K, DType::kQ6_K};
constexpr BundleDtypes kQ4K = BundleDtypes::Uniform(DType::kQ4_K);

ExpertFileLayout MixedLayout() {
  ExpertFileLayout layout = TestLayout();
  layout.dtypes = kQ4KM;
  layout.hidden_size = 256;
  layout.intermediate_size = 512;
  return layout;
}

std::vector<std::byte> MixedBundle(const BundleDtypes& dtypes, int layer, int expert) {
  std::vector<std::byte> bundle(ExpertBundleLayout(dtypes, 256, 512).bytes);
  std::mt19937 rng(static_cast<unsigned>(layer * 100 + expert));
  for (auto& b : bundle) b = static_cast<std::byte>(rng());
  return bundle;
}

BundleDtypes MixedDtypesOf(int layer) { return layer == 1 ? kQ4KM : kQ4K; }

// Rewrites the index entry of (layer, expert) of a version-2 file with
// `edit`, then recomputes the index and header checksums, so what Open sees
// is the edited field itself.
template <typename Edit>
void EditIndexEntry(const std::string& path, const ExpertFileLayout& layout, int layer, int expert, Edit edit) {
  std::vector<std::byte> header = ReadBytes(path, 0, 4096);
  const uint64_t entries = uint64_t{layout.num_layers} * layout.num_experts;
  std::vector<std::byte> index = ReadBytes(path, 4096, entries * 32);
  edit(index.data() + (static_cast<uint64_t>(layer) * layout.num_experts + expert) * 32);
  auto store = [&](size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) header[at + i] = static_cast<std::byte>(v >> (8 * i));
  };
  store(80, Xxh64(index));
  store(4088, Xxh64(absl::MakeConstSpan(header.data(), 4088)));
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.write(reinterpret_cast<const char*>(header.data()), 4096);
  f.write(reinterpret_cast<const char*>(index.data()), static_cast<std::streamsize>(index.size()));
}

class MixedExpertFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("mixed.experts");
    auto writer = ExpertFileWriter::Create(path_, layout_);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int layer : {2, 1, 3}) {
      for (int expert = 0; expert < 3; ++expert) {
        if (layer == 3 && expert == 1) continue;  // absent
        ASSERT_TRUE(
            (*writer)->Add(layer, expert, MixedDtypesOf(layer), MixedBundle(MixedDtypesOf(layer), layer, expert)).ok());
      }
    }
    ASSERT_TRUE((*writer)->Finish().ok());
  }

  std::string Copy(const std::string& name) {
    std::string copy = dir_.File(name);
    std::filesystem::copy_file(path_, copy, std::filesystem::copy_options::overwrite_existing);
    return copy;
  }

  ScratchDir dir_{"mixed"};
  ExpertFileLayout layout_ = MixedLayout();
  std::string path_;
};

TEST_F(MixedExpertFileTest, EachBundleKeepsItsDtypesAndSlotsFitTheLargest) {
  auto file = ExpertFile::Open(path_, kFingerprint);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 3u);
  const ExpertFileLayout& l = (*file)->layout();
  EXPECT_EQ(l.dtypes, kQ4KM);
  EXPECT_EQ(l.expert_bytes(), 2u * 73728 + 107520);
  EXPECT_EQ(l.slot_bytes(), 258048u);  // 254976 rounded up to 4096
  // Version 3's (as version 2's) header and index at FORMAT.md's offsets: the version, the
  // slot's numbers (5 = q4_k, 7 = q6_k) and, in each 32-byte entry after
  // offset, length and checksum, the bundle's own.
  EXPECT_EQ(ReadBytes(path_, 8, 4), (std::vector<std::byte>{std::byte{3}, {}, {}, {}}));
  EXPECT_EQ(ReadBytes(path_, 24, 4), (std::vector<std::byte>{std::byte{5}, std::byte{5}, std::byte{7}, {}}));
  // index_bytes: 4 * 3 entries of 32 bytes = 0x180.
  EXPECT_EQ(ReadBytes(path_, 72, 3), (std::vector<std::byte>{std::byte{0x80}, std::byte{0x01}, {}}));
  const auto entry = [&](int layer, int expert, uint64_t from, uint64_t bytes) {
    return ReadBytes(path_, 4096 + (layer * 3 + expert) * 32 + from, bytes);
  };
  EXPECT_EQ(entry(1, 2, 24, 8), (std::vector<std::byte>{std::byte{5}, std::byte{5}, std::byte{7}, {}, {}, {}, {}, {}}));
  EXPECT_EQ(entry(2, 0, 24, 8), (std::vector<std::byte>{std::byte{5}, std::byte{5}, std::byte{5}, {}, {}, {}, {}, {}}));
  EXPECT_EQ(entry(3, 1, 0, 32), std::vector<std::byte>(32));

  for (int layer = 1; layer < 4; ++layer) {
    for (int expert = 0; expert < 3; ++expert) {
      if (layer == 3 && expert == 1) {
        EXPECT_TRUE(absl::IsNotFound((*file)->Bundle(3, 1).status()));
        continue;
      }
      SCOPED_TRACE(absl::StrCat("layer ", layer, " expert ", expert));
      const BundleDtypes dtypes = MixedDtypesOf(layer);
      auto extent = (*file)->Find(layer, expert);
      ASSERT_TRUE(extent.ok()) << extent.status();
      EXPECT_EQ(extent->dtypes, dtypes);
      EXPECT_EQ(extent->length, layer == 1 ? 254976u : 3u * 73728);
      // Slots from data_offset 8192 (the index takes one page).
      EXPECT_EQ((extent->offset - 8192) % l.slot_bytes(), 0u);
      auto bundle = (*file)->Bundle(layer, expert);
      ASSERT_TRUE(bundle.ok()) << bundle.status();
      EXPECT_EQ(bundle->dtypes(), dtypes);
      EXPECT_EQ(bundle->bytes, extent->length);
      EXPECT_EQ(bundle->down.offset_bytes, 2u * 73728);
      EXPECT_EQ(bundle->down.size_bytes, layer == 1 ? 107520u : 73728u);
      const std::vector<std::byte> bytes = ReadBytes(path_, extent->offset, extent->length);
      EXPECT_EQ(bytes, MixedBundle(dtypes, layer, expert));
      EXPECT_TRUE((*file)->Verify(layer, expert, bytes).ok());
    }
  }
  ASSERT_EQ((*file)->dtype_mix().size(), 2u);
  EXPECT_EQ((*file)->dtype_mix()[0].dtypes, kQ4KM);  // layer 1 comes first in the index
  EXPECT_EQ((*file)->dtype_mix()[0].experts, 3u);
  EXPECT_EQ((*file)->dtype_mix()[1].dtypes, kQ4K);
  EXPECT_EQ((*file)->dtype_mix()[1].experts, 5u);
  EXPECT_EQ(DescribeDtypeMix((*file)->dtype_mix()), "q4_k/q4_k/q6_k x 3, q4_k x 5");
}

TEST_F(MixedExpertFileTest, WriterRefusesBundlesThatDoNotFitOrDoNotMatchTheirDtypes) {
  ScratchDir dir("mixed_writer");
  auto writer = ExpertFileWriter::Create(dir.File("x"), layout_);
  ASSERT_TRUE(writer.ok());
  // Wider than the slot in one matrix: q6_k gate where the slot has q4_k.
  const BundleDtypes wide{DType::kQ6_K, DType::kQ4_K, DType::kQ6_K};
  absl::Status status = (*writer)->Add(1, 0, wide, MixedBundle(wide, 1, 0));
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("more than the slot's"));
  // The bytes of another dtype's bundle.
  status = (*writer)->Add(1, 0, kQ4K, MixedBundle(kQ4KM, 1, 0));
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("for q4_k (gate/up/down)"));
  // A dtype the layout's widths cannot hold in whole blocks is named.
  ExpertFileLayout narrow = TestLayout();  // hidden 64, ffn 24
  narrow.dtypes = BundleDtypes::Uniform(DType::kF32);
  auto narrow_writer = ExpertFileWriter::Create(dir.File("y"), narrow);
  ASSERT_TRUE(narrow_writer.ok());
  const BundleDtypes q8_down{DType::kF32, DType::kF32, DType::kQ8_0};
  status = (*narrow_writer)->Add(1, 0, q8_down, std::vector<std::byte>(10));
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("layer 1 expert 0: down dtype q8_0"));
  // Narrower bundles than the slot are fine: the rest of the slot is padding.
  EXPECT_TRUE((*writer)->Add(1, 0, kQ4K, MixedBundle(kQ4K, 1, 0)).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
}

// Each refusal names the file, the expert and what is wrong; the checksums
// are recomputed, so the field itself is what is refused.
TEST_F(MixedExpertFileTest, OpenRefusesBadEntriesNamingTheExpert) {
  struct Case {
    const char* name;
    int byte;          // of the entry
    uint8_t value;
    const char* says;
  };
  const Case cases[] = {
      {"unknown_code", 25, 9, "layer 2 expert 1 has up unknown dtype 9"},
      // A q4_k expert relabelled q6_k down: its length no longer matches.
      {"length_mismatch", 26, 7, "layer 2 expert 1 has length 221184, but a bundle of q4_k/q4_k/q6_k"},
      {"reserved", 30, 1, "layer 2 expert 1's index entry has nonzero reserved byte 30"},
      // f32 down rows: a bundle larger than the slot (and than its length).
      {"f32_down", 26, 0, "layer 2 expert 1 has length 221184, but a bundle of q4_k/q4_k/f32"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string copy = Copy(c.name);
    EditIndexEntry(copy, layout_, 2, 1, [&](std::byte* e) { e[c.byte] = std::byte{c.value}; });
    absl::Status status = ExpertFile::Open(copy, kFingerprint).status();
    EXPECT_TRUE(absl::IsDataLoss(status)) << status;
    EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr(copy));
    EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr(c.says));
  }
  // A bundle whose dtypes and length agree but exceed the slot: q6_k
  // throughout (3 * 107520 bytes) in a q4_k/q4_k/q6_k slot.
  const std::string copy = Copy("too_large");
  EditIndexEntry(copy, layout_, 2, 1, [](std::byte* e) {
    const uint64_t length = 3 * 107520;
    for (int i = 0; i < 8; ++i) e[8 + i] = static_cast<std::byte>(length >> (8 * i));
    e[24] = e[25] = e[26] = std::byte{7};
  });
  absl::Status status = ExpertFile::Open(copy, kFingerprint).status();
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_THAT(std::string(status.message()),
              ::testing::HasSubstr("layer 2 expert 1 is a bundle of q6_k of 322560 bytes, larger than the slot's "
                                   "254976 (q4_k/q4_k/q6_k)"));
  // An absent entry with a dtype set.
  const std::string absent = Copy("absent_dtype");
  EditIndexEntry(absent, layout_, 3, 1, [](std::byte* e) { e[24] = std::byte{5}; });
  status = ExpertFile::Open(absent, kFingerprint).status();
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("absent layer 3 expert 1"));
}

// ---------------------------------------------------------------------------
// Version 1 still loads.

#ifndef EXPERTD_IO_TESTDATA
#error "tests/io/CMakeLists.txt defines EXPERTD_IO_TESTDATA"
#endif

// The 36-byte bundles make_fuzz_seeds wrote into the fixture.
std::vector<std::byte> SeedBundle() {
  std::vector<std::byte> bytes(36);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i * 37 + 11);
  return bytes;
}

// The fixture's layout: two layers of three bf16 experts, hidden 2, ffn 3.
ExpertFileLayout SeedLayout() {
  ExpertFileLayout layout;
  layout.model_fingerprint = 0x0123456789abcdefull;
  layout.dtypes = BundleDtypes::Uniform(DType::kBF16);
  layout.num_layers = 2;
  layout.num_experts = 3;
  layout.hidden_size = 2;
  layout.intermediate_size = 3;
  return layout;
}

// A file the version-1 writer wrote (tests/io/testdata/README.md).
TEST(ExpertFileVersion1Test, AFileTheVersion1WriterWroteOpensAndVerifies) {
  const std::string path = std::string(EXPERTD_IO_TESTDATA) + "/v1_dense_layer_and_gaps.experts";
  auto file = ExpertFile::Open(path, 0x0123456789abcdefull);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 1u);
  const ExpertFileLayout& l = (*file)->layout();
  EXPECT_EQ(l.dtypes, BundleDtypes::Uniform(DType::kBF16));
  EXPECT_EQ(l.num_layers, 2u);
  EXPECT_EQ(l.num_experts, 3u);
  EXPECT_EQ(l.expert_bytes(), 36u);
  EXPECT_EQ(l.slot_bytes(), 4096u);
  for (int expert : {0, 2}) {
    auto extent = (*file)->Find(1, expert);
    ASSERT_TRUE(extent.ok()) << extent.status();
    EXPECT_EQ(extent->dtypes, BundleDtypes::Uniform(DType::kBF16));
    EXPECT_EQ(ReadBytes(path, extent->offset, extent->length), SeedBundle());
    EXPECT_TRUE((*file)->Verify(1, expert, SeedBundle()).ok());
    auto bundle = (*file)->Bundle(1, expert);
    ASSERT_TRUE(bundle.ok());
    EXPECT_EQ(bundle->dtypes(), BundleDtypes::Uniform(DType::kBF16));
    EXPECT_EQ(bundle->down.offset_bytes, 24u);
  }
  // Added (1, 2) first: it has the first slot, after the one index page.
  EXPECT_EQ((*file)->Find(1, 2)->offset, 8192u);
  EXPECT_TRUE(absl::IsNotFound((*file)->Find(1, 1).status()));
  EXPECT_TRUE(absl::IsNotFound((*file)->Find(0, 0).status()));
  EXPECT_EQ(DescribeDtypeMix((*file)->dtype_mix()), "bf16 x 2");
}

// The same contents packed now (version 3) and rewritten by the tests'
// version-1 writer give the fixture's bytes exactly, so the version-1 files
// other tests make that way are what the old writer wrote.
TEST(ExpertFileVersion1Test, TheTestsVersion1RewriteReproducesTheOldWriter) {
  ScratchDir dir("v1_rewrite");
  auto writer = ExpertFileWriter::Create(dir.File("v2"), SeedLayout());
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Add(1, 2, SeedBundle()).ok());
  ASSERT_TRUE((*writer)->Add(1, 0, SeedBundle()).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  ASSERT_TRUE(expertd::testing::RewriteAsVersion1(dir.File("v2"), dir.File("v1")).ok());
  const std::string fixture = std::string(EXPERTD_IO_TESTDATA) + "/v1_dense_layer_and_gaps.experts";
  const uint64_t size = std::filesystem::file_size(fixture);
  ASSERT_EQ(std::filesystem::file_size(dir.File("v1")), size);
  EXPECT_EQ(ReadBytes(dir.File("v1"), 0, size), ReadBytes(fixture, 0, size));
}

// Version 1's validation still holds: a length other than expert_bytes is
// refused, naming the expert.
TEST(ExpertFileVersion1Test, Version1EntriesMustBeExpertBytesLong) {
  ScratchDir dir("v1_bad");
  const std::string fixture = std::string(EXPERTD_IO_TESTDATA) + "/v1_dense_layer_and_gaps.experts";
  const std::string copy = dir.File("bad.experts");
  std::filesystem::copy_file(fixture, copy);
  std::vector<std::byte> header = ReadBytes(copy, 0, 4096);
  std::vector<std::byte> index = ReadBytes(copy, 4096, 6 * 24);
  index[(1 * 3 + 2) * 24 + 8] = std::byte{34};  // length 36 -> 34
  auto store = [&](size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) header[at + i] = static_cast<std::byte>(v >> (8 * i));
  };
  store(80, Xxh64(index));
  store(4088, Xxh64(absl::MakeConstSpan(header.data(), 4088)));
  {
    std::fstream f(copy, std::ios::binary | std::ios::in | std::ios::out);
    f.write(reinterpret_cast<const char*>(header.data()), 4096);
    f.write(reinterpret_cast<const char*>(index.data()), static_cast<std::streamsize>(index.size()));
  }
  absl::Status status = ExpertFile::Open(copy, std::nullopt).status();
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("layer 1 expert 2 has length 34"));
}

// Version 3 (what the writer writes) checksums bundles with XXH3; a file
// rewritten as version 2 keeps XXH64 and still verifies, whole and piece by
// piece, and a corrupted bundle is named with the hash that caught it.
class ExpertFileChecksumVersionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto writer = ExpertFileWriter::Create(v3_, SeedLayout());
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Add(1, 2, SeedBundle()).ok());
    ASSERT_TRUE((*writer)->Finish().ok());
    ASSERT_TRUE(expertd::testing::RewriteAsVersion2(v3_, v2_).ok());
  }

  // Verifies (1, 2) from `bytes` both ways: whole, and in 8-byte pieces
  // arriving last first.
  static std::pair<absl::Status, absl::Status> VerifyBothWays(const ExpertFile& file,
                                                              const std::vector<std::byte>& bytes) {
    const absl::Status whole = file.Verify(1, 2, bytes);
    auto verifier = BundleVerifier::Start(file, 1, 2, bytes.data(), bytes.size(), 8);
    if (!verifier.ok()) return {whole, verifier.status()};
    for (int piece = (*verifier)->pieces() - 1; piece >= 0; --piece) (void)(*verifier)->Arrived(piece, absl::OkStatus());
    return {whole, (*verifier)->result()};
  }

  ScratchDir dir_{"checksum_versions"};
  const std::string v3_ = dir_.File("v3");
  const std::string v2_ = dir_.File("v2");
};

TEST_F(ExpertFileChecksumVersionTest, TheWriterWritesVersion3WithXxh3) {
  auto file = ExpertFile::Open(v3_, std::nullopt);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 3u);
  EXPECT_EQ((*file)->bundle_hash(), BundleHash::kXxh3);
  EXPECT_EQ((*file)->Find(1, 2)->checksum, HashBundle(BundleHash::kXxh3, SeedBundle()));
  EXPECT_NE((*file)->Find(1, 2)->checksum, Xxh64(SeedBundle()));
  const auto [whole, pieces] = VerifyBothWays(**file, SeedBundle());
  EXPECT_TRUE(whole.ok()) << whole;
  EXPECT_TRUE(pieces.ok()) << pieces;
}

TEST_F(ExpertFileChecksumVersionTest, AVersion2FileKeepsXxh64) {
  auto file = ExpertFile::Open(v2_, 0x0123456789abcdefull);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 2u);
  EXPECT_EQ((*file)->bundle_hash(), BundleHash::kXxh64);
  EXPECT_EQ((*file)->Find(1, 2)->checksum, Xxh64(SeedBundle()));
  EXPECT_EQ(ReadBytes(v2_, (*file)->Find(1, 2)->offset, 36), SeedBundle());
  const auto [whole, pieces] = VerifyBothWays(**file, SeedBundle());
  EXPECT_TRUE(whole.ok()) << whole;
  EXPECT_TRUE(pieces.ok()) << pieces;
}

TEST_F(ExpertFileChecksumVersionTest, ACorruptBundleIsNamedWithItsHash) {
  std::vector<std::byte> corrupt = SeedBundle();
  corrupt[17] ^= std::byte{4};
  for (const auto& [path, hash] : {std::pair{v3_, "XXH3 "}, std::pair{v2_, "XXH64 "}}) {
    auto file = ExpertFile::Open(path, std::nullopt);
    ASSERT_TRUE(file.ok()) << file.status();
    const auto [whole, pieces] = VerifyBothWays(**file, corrupt);
    for (const absl::Status& status : {whole, pieces}) {
      EXPECT_TRUE(absl::IsDataLoss(status)) << status;
      EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr(hash)) << path;
    }
  }
}

TEST(BundleHashTest, MatchesReferenceValuesWholeAndInPieces) {
  const char* abc = "abc";
  const auto abc_bytes = absl::MakeConstSpan(reinterpret_cast<const std::byte*>(abc), 3);
  EXPECT_EQ(HashBundle(BundleHash::kXxh3, {}), 0x2D06800538D394C2ull);
  EXPECT_EQ(HashBundle(BundleHash::kXxh3, abc_bytes), 0x78AF5F94892F3950ull);
  EXPECT_EQ(HashBundle(BundleHash::kXxh64, abc_bytes), 0x44BC2CF5AD770999ull);
  // Long enough for XXH3's vector loop and its streaming buffer to matter.
  std::vector<std::byte> bytes(300000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i * 131 + (i >> 9));
  for (BundleHash hash : {BundleHash::kXxh3, BundleHash::kXxh64}) {
    BundleHasher hasher(hash);
    for (size_t at = 0; at < bytes.size(); at += 4099) {
      hasher.Update(absl::MakeConstSpan(bytes).subspan(at, std::min<size_t>(4099, bytes.size() - at)));
    }
    EXPECT_EQ(hasher.Digest(), HashBundle(hash, bytes)) << BundleHashName(hash);
  }
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
