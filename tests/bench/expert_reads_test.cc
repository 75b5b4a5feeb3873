#include "bench/expert_reads.h"

#include <unistd.h>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "io/aligned_buffer.h"
#include "io/expert_reader.h"

namespace expertd::bench {
namespace {

constexpr int kLayers = 3;
constexpr int kExperts = 8;
constexpr uint64_t kExpertBytes = 4096;

// A file of kLayers x kExperts "experts", each 4 KiB of one byte value, its
// index in the file; the reads that name them, as SlotReads would.
class BatchReadsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = absl::StrCat(::testing::TempDir(), "/expertd_batch_reads_", ::getpid());
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    for (int i = 0; i < kLayers * kExperts; ++i) {
      const std::string bytes(kExpertBytes, static_cast<char>(i));
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      reads_.push_back({static_cast<uint64_t>(i) * kExpertBytes, kExpertBytes});
    }
    ASSERT_TRUE(out.good());
    out.close();
    io::ReaderOptions options;
    options.path = path_;
    options.direct_io = false;  // the test's temp dir may be tmpfs
    auto reader = io::OpenExpertReader(options);
    ASSERT_TRUE(reader.ok()) << reader.status();
    reader_ = std::move(*reader);
    ASSERT_TRUE(GrowReadBuffers(buffers_, kExperts, kExpertBytes).ok());
    ASSERT_EQ(buffers_.size(), static_cast<size_t>(kExperts));
  }
  void TearDown() override {
    reader_.reset();
    std::filesystem::remove(path_);
  }

  std::string path_;
  std::vector<ExpertRead> reads_;
  std::unique_ptr<io::ExpertReader> reader_;
  std::vector<io::AlignedBuffer> buffers_;
};

TEST_F(BatchReadsTest, ABatchIsDistinctExpertsOfOneLayer) {
  for (int batch : {1, 3, kExperts}) {
    std::string error;
    const double seconds = MeasureBatchSeconds(*reader_, reads_, kExperts, buffers_, batch, 0.0, 5, &error);
    ASSERT_TRUE(error.empty()) << error;
    EXPECT_GT(seconds, 0.0);
    // The last batch's experts: `batch` different ones, all of one layer.
    std::set<int> experts;
    for (int i = 0; i < batch; ++i) {
      const auto* bytes = reinterpret_cast<const unsigned char*>(buffers_[i].data());
      for (uint64_t b = 1; b < kExpertBytes; ++b) ASSERT_EQ(bytes[b], bytes[0]) << "a torn read in buffer " << i;
      experts.insert(bytes[0]);
    }
    EXPECT_EQ(experts.size(), static_cast<size_t>(batch));
    EXPECT_EQ(*experts.begin() / kExperts, *experts.rbegin() / kExperts) << "experts of two layers in one batch";
  }
}

TEST_F(BatchReadsTest, AFailedReadIsReportedAndEndsTheMeasurement) {
  // Every read past the end of the file.
  std::vector<ExpertRead> past_the_end(reads_.size(), {uint64_t{1} << 30, kExpertBytes});
  std::string error;
  (void)MeasureBatchSeconds(*reader_, past_the_end, kExperts, buffers_, 2, 10.0, 1000, &error);
  EXPECT_FALSE(error.empty());
}

}  // namespace
}  // namespace expertd::bench
