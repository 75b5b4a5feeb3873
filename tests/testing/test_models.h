#ifndef EXPERTD_TESTS_TESTING_TEST_MODELS_H_
#define EXPERTD_TESTS_TESTING_TEST_MODELS_H_

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tools/mkmodel/make_model.h"

namespace expertd::testing {

// A fresh directory under the test's temporary dir, removed with the object.
class ScopedTempDir {
 public:
  explicit ScopedTempDir(const std::string& name) {
    static int counter = 0;  // test binaries are single-threaded here
    path_ = std::filesystem::path(::testing::TempDir()) /
            absl::StrCat("expertd_", name, "_", ::getpid(), "_", counter++);
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScopedTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;
  std::string path() const { return path_.string(); }
  std::string Sub(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Writes a model with mkmodel's generator into dir/name and returns its path.
inline std::string MakeTestModel(const ScopedTempDir& dir, const std::string& name,
                                 const tools::MakeModelOptions& options) {
  const std::string path = dir.Sub(name);
  absl::Status status = tools::MakeModel(options, path);
  EXPECT_TRUE(status.ok()) << status;
  return path;
}

// A 3-layer, 16-expert top-4 model of `arch` in `dtype` (qwen2_moe with a
// dense middle layer): the offloading tests' shape, where a cache of a few
// slots must evict.
inline tools::MakeModelOptions SmallOffloadModel(const std::string& arch, const std::string& dtype) {
  tools::MakeModelOptions o;
  o.arch = arch;
  o.dtype = dtype;
  if (dtype == "mxfp4") {
    // gpt-oss as released: MXFP4 experts (HF blocks and scales), bf16 rest.
    o.dtype = "bf16";
    o.mxfp4_experts = true;
  }
  o.layers = 3;
  o.experts = 16;
  o.top_k = 4;
  o.vocab = 320;
  if (arch == "qwen2_moe") o.dense_layers = {1};
  return o;
}

}  // namespace expertd::testing

#endif  // EXPERTD_TESTS_TESTING_TEST_MODELS_H_
