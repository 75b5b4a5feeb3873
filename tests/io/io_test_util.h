#ifndef EXPERTD_TESTS_IO_IO_TEST_UTIL_H_
#define EXPERTD_TESTS_IO_IO_TEST_UTIL_H_

#include <unistd.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "io/expert_reader.h"

namespace expertd::io::testing {

// A scratch directory under the test temp dir, unique to this process and
// name, removed on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(absl::StrCat(::testing::TempDir(), "/expertd_io_", name, "_", ::getpid())) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return absl::StrCat(path_, "/", name); }

 private:
  std::string path_;
};

// The byte a pattern file holds at `offset`: depends on the whole offset, so a
// read from the wrong place is caught.
inline std::byte PatternByte(uint64_t offset) {
  uint64_t x = (offset / 8) * 0x9e3779b97f4a7c15ull;
  x ^= x >> 29;
  return static_cast<std::byte>((x >> (8 * (offset % 8))) ^ (offset >> 12));
}

inline void WritePatternFile(const std::string& path, uint64_t bytes) {
  std::vector<char> data(bytes);
  for (uint64_t i = 0; i < bytes; ++i) data[i] = static_cast<char>(PatternByte(i));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  ASSERT_TRUE(out.good()) << path;
}

// Counts completions; Wait() returns once `expected` arrived.
class Completions {
 public:
  explicit Completions(int expected) : statuses_(static_cast<size_t>(expected)), remaining_(expected) {}

  ExpertReader::Done Callback(int i) {
    return [this, i](absl::Status status) {
      std::lock_guard<std::mutex> lock(mu_);
      statuses_[static_cast<size_t>(i)] = std::move(status);
      ++calls_;
      if (--remaining_ == 0) cv_.notify_all();
    };
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return remaining_ <= 0; });
  }
  const absl::Status& status(int i) const { return statuses_[static_cast<size_t>(i)]; }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<absl::Status> statuses_;
  int remaining_;
  int calls_ = 0;
};

inline absl::Status ReadSync(ExpertReader& reader, uint64_t offset, uint64_t length, std::byte* dest) {
  Completions c(1);
  reader.Submit(offset, length, dest, c.Callback(0));
  c.Wait();
  return c.status(0);
}

}  // namespace expertd::io::testing

#endif  // EXPERTD_TESTS_IO_IO_TEST_UTIL_H_
