#ifndef EXPERTD_TESTS_TESTING_PACKED_EXPERTS_H_
#define EXPERTD_TESTS_TESTING_PACKED_EXPERTS_H_

#include <memory>
#include <optional>
#include <string>

#include "engine/expert_packer.h"
#include "model/model.h"
#include "gtest/gtest.h"
#include "io/expert_file.h"
#include "io/expert_reader.h"

namespace expertd::testing {

// A model's experts packed into a file and opened for a cache.
struct PackedExperts {
  std::unique_ptr<io::ExpertFile> file;
  std::unique_ptr<io::ExpertReader> reader;
};

// Packs `model`'s experts (their stored dtype, or `dtype`) into `path` and
// opens the file and a default reader; the test fails on any error.
inline PackedExperts PackAndOpenExperts(const model::Model& model, const std::string& path,
                                        std::optional<DType> dtype = std::nullopt) {
  PackedExperts out;
  absl::Status packed = engine::PackExperts(model, path, dtype);
  EXPECT_TRUE(packed.ok()) << packed;
  auto file = io::ExpertFile::Open(path, model.fingerprint());
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return out;
  out.file = std::move(*file);
  io::ReaderOptions options;
  options.path = path;
  auto reader = io::OpenExpertReader(options);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (reader.ok()) out.reader = std::move(*reader);
  return out;
}

}  // namespace expertd::testing

#endif  // EXPERTD_TESTS_TESTING_PACKED_EXPERTS_H_
