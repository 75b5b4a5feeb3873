#include "cache/sim/trace_file.h"

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace expertd::cache {
namespace {

std::vector<TraceRecord> SampleRecords(bool with_scores) {
  std::vector<TraceRecord> records = {
      {0, 0, {3, 1}, {0.625f, 0.1f}},
      {0, 1, {0, 2}, {0.3333333f, 1e-7f}},
      {1, 0, {1, 3}, {0.5f, 0.25f}},
      {1, 1, {2, 0}, {0.9f, 0.05f}},
      {4, 1, {1, 2}, {0.7f, 0.2f}},  // Token 4 skipped layer 0: allowed.
  };
  if (!with_scores) {
    for (TraceRecord& record : records) record.scores.clear();
  }
  return records;
}

void ExpectSameRecords(const std::vector<TraceRecord>& a, const std::vector<TraceRecord>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].token, b[i].token) << i;
    EXPECT_EQ(a[i].layer, b[i].layer) << i;
    EXPECT_EQ(a[i].experts, b[i].experts) << i;
    EXPECT_EQ(a[i].scores, b[i].scores) << i;  // Exact: floats are written to round-trip.
  }
}

TEST(TraceFileTest, RoundTripsThroughAFile) {
  const std::string path = ::testing::TempDir() + "/trace_file_test.trace";
  for (bool with_scores : {true, false}) {
    const std::vector<TraceRecord> records = SampleRecords(with_scores);
    ASSERT_TRUE(WriteTraceFile(path, 2, 4, records).ok());
    absl::StatusOr<LoadedTrace> loaded = ReadTraceFile(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->num_layers, 2);
    EXPECT_EQ(loaded->num_experts, 4);
    EXPECT_EQ(loaded->k, 2);
    EXPECT_EQ(loaded->has_scores, with_scores);
    ExpectSameRecords(loaded->records, records);

    // One pass per token, in layer order then rank order.
    const AccessTrace& trace = loaded->trace;
    EXPECT_EQ(trace.num_layers, 2);
    EXPECT_EQ(trace.num_experts, 4);
    ASSERT_EQ(trace.passes.size(), 3u);
    EXPECT_EQ(trace.passes[0], (std::vector<ExpertKey>{{0, 3}, {0, 1}, {1, 0}, {1, 2}}));
    EXPECT_EQ(trace.passes[1], (std::vector<ExpertKey>{{0, 1}, {0, 3}, {1, 2}, {1, 0}}));
    EXPECT_EQ(trace.passes[2], (std::vector<ExpertKey>{{1, 1}, {1, 2}}));
    if (with_scores) {
      ASSERT_EQ(loaded->access_scores.size(), 3u);
      EXPECT_EQ(loaded->access_scores[1], (std::vector<float>{0.5f, 0.25f, 0.9f, 0.05f}));
    } else {
      EXPECT_TRUE(loaded->access_scores.empty());
    }
  }
  std::remove(path.c_str());
}

TEST(TraceFileTest, AcceptsCommentsBlankLinesAndFieldsInAnyOrder) {
  absl::StatusOr<LoadedTrace> loaded = ParseTrace(
      "expertd-trace v1 k=1 experts=3 layers=2\n# recorded by hand\n\n0 0 2:0.5\n0 1 0:1\n", "hand");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->trace.passes, (std::vector<std::vector<ExpertKey>>{{{0, 2}, {1, 0}}}));
}

// Each bad input, and the line its error must name.
struct BadTrace {
  const char* text;
  const char* where;
  const char* what;
};

TEST(TraceFileTest, ErrorsNameTheLine) {
  const std::string header = "expertd-trace v1 layers=2 experts=4 k=2\n";
  const std::vector<BadTrace> cases = {
      {"", "t:1:", "not an expertd trace"},
      {"hello\n", "t:1:", "not an expertd trace"},
      {"expertd-trace v3 layers=2 experts=4 k=2\n0 0 1 2\n", "t:1:", "version"},
      {"expertd-trace v1 layers=2 experts=4\n0 0 1 2\n", "t:1:", "k=N"},
      {"expertd-trace v1 layers=2 experts=x k=2\n", "t:1:", "positive integer"},
      {"expertd-trace v1 layers=2 experts=4 k=5\n", "t:1:", "more than"},
      {"expertd-trace v1 layers=2 experts=4 k=2 color=red\n", "t:1:", "unexpected header field"},
      {"expertd-trace v1 layers=2 layers=2 experts=4 k=2\n", "t:1:", "twice"},
      {"header-only", "t:1:", "not an expertd trace"},
  };
  const std::vector<BadTrace> record_cases = {
      {"0 0 1\n", "t:2:", "k=2"},
      {"0 0 1 2\n0 1 1 9\n", "t:3:", "expert 9"},
      {"0 0 1 1\n", "t:2:", "twice"},
      {"0 2 1 2\n", "t:2:", "layer 2"},
      {"0 1 1 2\n0 0 1 2\n", "t:3:", "layers must ascend"},
      {"1 0 1 2\n0 1 1 2\n", "t:3:", "tokens must ascend"},
      {"0 0 1:0.5 2:zero\n", "t:2:", "not a number"},
      {"0 0 1:0.5 2\n", "t:2:", "score"},
      {"0 0 1:0.5 2:0.1\n\n# note\n1 0 1 2\n", "t:5:", "with and without scores"},
      {"0 x 1 2\n", "t:2:", "layer \"x\""},
      {"0 0\n", "t:2:", "expected"},
      {"0 0 1:nan 2:0.1\n", "t:2:", "not finite"},
      {"# nothing\n", "t:", "no records"},
  };
  auto check = [](const std::string& text, const BadTrace& bad) {
    absl::StatusOr<LoadedTrace> loaded = ParseTrace(text, "t");
    ASSERT_FALSE(loaded.ok()) << text;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << text;
    const std::string message(loaded.status().message());
    EXPECT_EQ(message.rfind(bad.where, 0), 0u) << "error \"" << message << "\" should start with " << bad.where;
    EXPECT_NE(message.find(bad.what), std::string::npos) << "error \"" << message << "\" should say " << bad.what;
  };
  for (const BadTrace& bad : cases) check(bad.text, bad);
  for (const BadTrace& bad : record_cases) check(header + bad.text, bad);
}

TEST(TraceFileTest, WriterRejectsWhatTheReaderWould) {
  std::vector<TraceRecord> records = SampleRecords(true);
  EXPECT_TRUE(FormatTrace(2, 4, records).ok());
  EXPECT_FALSE(FormatTrace(2, 4, {}).ok());
  EXPECT_FALSE(FormatTrace(0, 4, records).ok());
  records[1].experts = {0, 0};
  absl::StatusOr<std::string> text = FormatTrace(2, 4, records);
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("record 1"), absl::string_view::npos) << text.status();
  records = SampleRecords(true);
  records[2].scores.pop_back();
  EXPECT_FALSE(FormatTrace(2, 4, records).ok());
}

TEST(TraceFileTest, MissingFileIsNotFound) {
  absl::StatusOr<LoadedTrace> loaded = ReadTraceFile(::testing::TempDir() + "/no/such/file.trace");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(loaded.status().message().find("no/such/file.trace"), absl::string_view::npos);
}

// Popularity for a precision plan: every row's choice counts, in v1 (one
// row per token) and v2 (a prefill step's rows each count, not once per
// step as the step's accesses would).
TEST(TraceFileTest, CountsEveryChoiceOfEveryRow) {
  auto v1 = ParseTrace(*FormatTrace(2, 4, SampleRecords(false)), "v1");
  ASSERT_TRUE(v1.ok()) << v1.status();
  // Layer 0: {3,1}, {1,3}; layer 1: {0,2}, {2,0}, {1,2}.
  EXPECT_EQ(CountExpertChoices(*v1), (std::vector<uint64_t>{0, 2, 0, 2, 2, 1, 3, 0}));

  const std::string v2_text =
      "expertd-trace v2 layers=2 experts=4 k=2\n"
      "step rows=3\n0 0 3 1\n1 0 3 2\n2 0 3 1\n0 1 0 2\n1 1 0 1\n2 1 2 0\n"
      "step rows=1\n0 0 1 0\n0 1 2 3\n";
  auto v2 = ParseTrace(v2_text, "v2");
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->version, 2);
  EXPECT_EQ(CountExpertChoices(*v2), (std::vector<uint64_t>{1, 3, 1, 3, 3, 1, 3, 1}));
}

}  // namespace
}  // namespace expertd::cache
