#include "base/read_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace expertd {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class ReadFileCappedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) / absl::StrCat("expertd_read_file_", ::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  std::filesystem::path dir_;
};

TEST_F(ReadFileCappedTest, ReadsAFileUpToAndAtTheCap) {
  const std::string path = Write("a.json", "{\"x\": 1}");
  absl::StatusOr<std::string> text = ReadFileCapped(path, 1024, "config");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "{\"x\": 1}");
  text = ReadFileCapped(path, 8, "config");  // exactly the cap
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->size(), 8u);
  text = ReadFileCapped(Write("empty", ""), 0, "config");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "");
}

TEST_F(ReadFileCappedTest, ALargerFileNamesWhatPathAndCap) {
  const std::string path = Write("big.json", std::string(4097, 'x'));
  absl::StatusOr<std::string> text = ReadFileCapped(path, 4096, "tokenizer.json");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(),
              AllOf(HasSubstr("tokenizer.json"), HasSubstr(path), HasSubstr("4.0 KiB"), HasSubstr("4096 bytes"),
                    HasSubstr("4097")));
}

// A character device never ends: the read must stop one byte past the cap.
TEST_F(ReadFileCappedTest, AnEndlessDeviceStopsAtTheCap) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> text = ReadFileCapped("/dev/zero", 1 << 20, "config");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), AllOf(HasSubstr("/dev/zero"), HasSubstr("1.0 MiB")));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST_F(ReadFileCappedTest, AFifoIsReadUpToTheCap) {
  const std::string path = (dir_ / "fifo").string();
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  // The writer fills the pipe beyond the cap in a child, as a `<(...)` would.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const int fd = ::open(path.c_str(), O_WRONLY);
    const std::string bytes(64 * 1024, 'y');
    const bool wrote = fd >= 0 && ::write(fd, bytes.data(), bytes.size()) > 0;
    ::_exit(wrote ? 0 : 1);
  }
  absl::StatusOr<std::string> text = ReadFileCapped(path, 1000, "config");
  EXPECT_FALSE(text.ok());
  EXPECT_THAT(text.status().message(), HasSubstr(path));
  // The writer may be blocked on a pipe no one reads any more: SIGPIPE ends it.
  int wstatus = 0;
  ::waitpid(child, &wstatus, 0);
}

TEST_F(ReadFileCappedTest, MissingFileAndDirectoryAreNamed) {
  absl::StatusOr<std::string> text = ReadFileCapped((dir_ / "missing.json").string(), 100, "config.json");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(text.status().message(), AllOf(HasSubstr("config.json"), HasSubstr("missing.json")));
  text = ReadFileCapped(dir_.string(), 100, "config");
  ASSERT_FALSE(text.ok());
  EXPECT_THAT(text.status().message(), AllOf(HasSubstr(dir_.string()), HasSubstr("directory")));
}

}  // namespace
}  // namespace expertd
