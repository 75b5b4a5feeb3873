// Trace format v2 (cache/sim/TRACE_FORMAT.md): engine steps with their rows,
// the prefetcher's predictions and layer compute times.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cache/sim/trace_file.h"
#include "gtest/gtest.h"

namespace expertd::cache {
namespace {

// Two steps of a 3-layer, 4-expert, top-2 model: a 2-row prefill chunk
// whose rows share expert 1 at layer 0, then a 1-row decode step.
std::vector<TraceStep> SampleSteps() {
  TraceStep prefill;
  prefill.rows = 2;
  prefill.records = {{0, 0, {1, 3}, {}}, {1, 0, {2, 1}, {}}, {0, 2, {0, 1}, {}}, {1, 2, {0, 3}, {}}};
  prefill.predictions = {{.at_layer = 0, .for_layer = 2, .next_step = false, .budget = 2, .experts = {0, 3, 2},
                          .scores = {0.5f, 0.25f, 0.125f}}};
  prefill.compute = {{.layer = 0, .compute_us = 120.5}, {.layer = 2, .compute_us = 80}};
  TraceStep decode;
  decode.rows = 1;
  decode.gap_us = 250.5;
  decode.records = {{0, 0, {3, 2}, {}}, {0, 2, {1, 0}, {}}};
  decode.predictions = {{.at_layer = 2, .for_layer = 0, .next_step = true, .budget = 1, .experts = {3, 2},
                         .scores = {}}};
  return {prefill, decode};
}

TEST(StepTraceTest, RoundTripsWithPredictionsComputeTimesAndIoFigures) {
  const std::string path = ::testing::TempDir() + "/step_trace_test.trace";
  const TraceIoFigures io{12288, 1.5e9, 42.5};
  ASSERT_TRUE(WriteStepTraceFile(path, 3, 4, 2, io, SampleSteps()).ok());
  absl::StatusOr<LoadedTrace> loaded = ReadTraceFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->version, 2);
  EXPECT_EQ(loaded->k, 2);
  EXPECT_EQ(loaded->io.expert_bytes, 12288u);
  EXPECT_DOUBLE_EQ(loaded->io.read_bytes_per_second, 1.5e9);
  EXPECT_DOUBLE_EQ(loaded->io.load_us, 42.5);
  ASSERT_EQ(loaded->steps.size(), 2u);
  const TraceStep& prefill = loaded->steps[0];
  EXPECT_EQ(prefill.rows, 2);
  ASSERT_EQ(prefill.records.size(), 4u);
  EXPECT_EQ(prefill.records[1].token, 1);
  EXPECT_EQ(prefill.records[1].experts, (std::vector<int32_t>{2, 1}));
  ASSERT_EQ(prefill.predictions.size(), 1u);
  EXPECT_EQ(prefill.predictions[0].for_layer, 2);
  EXPECT_EQ(prefill.predictions[0].budget, 2);
  EXPECT_EQ(prefill.predictions[0].experts, (std::vector<int32_t>{0, 3, 2}));
  EXPECT_EQ(prefill.predictions[0].scores, (std::vector<float>{0.5f, 0.25f, 0.125f}));
  ASSERT_EQ(prefill.compute.size(), 2u);
  EXPECT_DOUBLE_EQ(prefill.compute[0].compute_us, 120.5);
  EXPECT_EQ(prefill.gap_us, -1) << "not recorded";
  EXPECT_DOUBLE_EQ(loaded->steps[1].gap_us, 250.5);
  ASSERT_EQ(loaded->steps[1].predictions.size(), 1u);
  EXPECT_TRUE(loaded->steps[1].predictions[0].next_step);
  EXPECT_EQ(loaded->steps[1].predictions[0].for_layer, 0);

  // One pass per step: per layer the distinct experts of its rows, in
  // expert order, as the engine asks for them (expert 1, chosen by both
  // prefill rows at layer 0, is one access).
  ASSERT_EQ(loaded->trace.passes.size(), 2u);
  EXPECT_EQ(loaded->trace.passes[0], (std::vector<ExpertKey>{{0, 1}, {0, 2}, {0, 3}, {2, 0}, {2, 1}, {2, 3}}));
  EXPECT_EQ(loaded->trace.passes[1], (std::vector<ExpertKey>{{0, 2}, {0, 3}, {2, 0}, {2, 1}}));
}

TEST(StepTraceTest, V1TracesStillReadAsOneStepPerToken) {
  absl::StatusOr<LoadedTrace> loaded =
      ParseTrace("expertd-trace v1 layers=2 experts=4 k=2\n0 0 3 1\n0 1 0 2\n1 0 1 3\n", "t");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->version, 1);
  ASSERT_EQ(loaded->steps.size(), 2u);
  EXPECT_EQ(loaded->steps[0].rows, 1);
  EXPECT_EQ(loaded->steps[0].records.size(), 2u);
  EXPECT_TRUE(loaded->steps[0].predictions.empty());
  EXPECT_EQ(loaded->trace.passes[0], (std::vector<ExpertKey>{{0, 3}, {0, 1}, {1, 0}, {1, 2}}));
}

TEST(StepTraceTest, ErrorsNameTheLine) {
  const std::string header = "expertd-trace v2 layers=2 experts=4 k=2 expert_bytes=64\n";
  struct Bad {
    std::string text;
    std::string where;
    std::string what;
  };
  const std::vector<Bad> cases = {
      {"0 0 1 2\n", "t:2:", "step rows=N"},
      {"step rows=0\n0 0 1 2\n", "t:2:", "rows=0"},
      {"step rows=1 gap_us=-3\n0 0 1 2\n", "t:2:", "gap_us"},
      {"step rows=1\n1 0 1 2\n", "t:2:", "row 1"},
      {"step rows=1\n0 1 1 2\n0 0 1 2\n", "t:2:", "layers must ascend"},
      {"step rows=1\n0 0 1 1\n", "t:2:", "twice"},
      {"step rows=1\n0 0 1 2\npredict 1 0 budget=1 2\n", "t:2:", "must lie ahead"},
      {"step rows=1\n0 0 1 2\npredict 0 1 budget=0 2\n", "t:2:", "budget 0"},
      {"step rows=1\n0 0 1 2\npredict 0 1 2\n", "t:4:", "budget=N"},
      {"step rows=1\n0 0 1 2\ncompute 0 fast\n", "t:4:", "compute <layer>"},
      {"step rows=1\n0 0 1 2\npredict 0 1 budget=1 7\n", "t:2:", "expert 7"},
      {"step rows=1\n", "t:2:", "no routing records"},
      {"# nothing\n", "t:", "no steps"},
  };
  for (const Bad& bad : cases) {
    absl::StatusOr<LoadedTrace> loaded = ParseTrace(header + bad.text, "t");
    ASSERT_FALSE(loaded.ok()) << bad.text;
    const std::string message(loaded.status().message());
    EXPECT_EQ(message.rfind(bad.where, 0), 0u) << "error \"" << message << "\" should start with " << bad.where;
    EXPECT_NE(message.find(bad.what), std::string::npos) << "error \"" << message << "\" should say " << bad.what;
  }
  absl::StatusOr<LoadedTrace> v1_io = ParseTrace("expertd-trace v1 layers=2 experts=4 k=2 expert_bytes=64\n", "t");
  EXPECT_FALSE(v1_io.ok()) << "v1 has no I/O figures";
}

TEST(StepTraceTest, WriterRejectsWhatTheReaderWould) {
  std::vector<TraceStep> steps = SampleSteps();
  steps[1].records[0].experts = {3, 3};
  absl::StatusOr<std::string> text = FormatStepTrace(3, 4, 2, {}, steps);
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("step 1"), std::string::npos) << text.status();
  EXPECT_FALSE(FormatStepTrace(3, 4, 2, {}, {}).ok());
}

}  // namespace
}  // namespace expertd::cache
