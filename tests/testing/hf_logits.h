#ifndef EXPERTD_TESTS_TESTING_HF_LOGITS_H_
#define EXPERTD_TESTS_TESTING_HF_LOGITS_H_

// The families' checks against Hugging Face transformers: reading the
// logits files that tests/reference/hf_*/make_reference.py wrote, and the
// one measure of agreement they all use.

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace expertd::testing {

// One row per position, whitespace-separated values; '#' lines are comments.
inline std::vector<std::vector<double>> ReadLogitsFile(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::vector<std::vector<double>> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream values(line);
    rows.emplace_back();
    for (double v; values >> v;) rows.back().push_back(v);
  }
  return rows;
}

// The largest |actual - expected| over every position and token, and the
// largest |expected| logit it is judged against.
struct LogitsDifference {
  double largest = 0.0;
  double largest_logit = 1e-9;
  double relative() const { return largest / largest_logit; }
};

// `at(t, i)` is the logit under test at position t, token i.
template <typename At>
LogitsDifference CompareLogitsWith(const At& at, const std::vector<std::vector<double>>& expected) {
  LogitsDifference d;
  for (size_t t = 0; t < expected.size(); ++t) {
    for (size_t i = 0; i < expected[t].size(); ++i) {
      d.largest = std::max(d.largest, std::abs(at(t, i) - expected[t][i]));
      d.largest_logit = std::max(d.largest_logit, std::abs(expected[t][i]));
    }
  }
  return d;
}

// Rows of the same shape as `expected`; a row of another length fails the
// test and makes the difference infinite.
inline LogitsDifference CompareLogits(const std::vector<std::vector<double>>& actual,
                                      const std::vector<std::vector<double>>& expected) {
  EXPECT_EQ(actual.size(), expected.size());
  for (size_t t = 0; t < std::min(actual.size(), expected.size()); ++t) {
    EXPECT_EQ(actual[t].size(), expected[t].size()) << "position " << t;
    if (actual[t].size() != expected[t].size()) return {std::numeric_limits<double>::infinity(), 1.0};
  }
  if (actual.size() != expected.size()) return {std::numeric_limits<double>::infinity(), 1.0};
  return CompareLogitsWith([&](size_t t, size_t i) { return actual[t][i]; }, expected);
}

// `actual` flat, [positions][vocab] with vocab = expected's row length.
inline LogitsDifference CompareLogits(const std::vector<float>& actual,
                                      const std::vector<std::vector<double>>& expected) {
  const size_t vocab = expected.empty() ? 0 : expected[0].size();
  EXPECT_EQ(actual.size(), expected.size() * vocab);
  if (actual.size() != expected.size() * vocab) return {std::numeric_limits<double>::infinity(), 1.0};
  return CompareLogitsWith([&](size_t t, size_t i) { return static_cast<double>(actual[t * vocab + i]); }, expected);
}

}  // namespace expertd::testing

#endif  // EXPERTD_TESTS_TESTING_HF_LOGITS_H_
