#include "cache/sim/bench_cache.h"

#include <sstream>
#include <string>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/sim/synthetic_trace.h"
#include "cache/sim/trace_file.h"
#include "gtest/gtest.h"

namespace expertd::cache {
namespace {

AccessTrace SmallTrace() {
  SyntheticTraceOptions options;
  options.num_layers = 4;
  options.num_experts = 16;
  options.k = 2;
  options.tokens = 100;
  options.zipf_exponent = 0.8;
  options.reuse_probability = 0.3;
  return MakeSyntheticTrace(options);
}

TEST(CacheBenchmarkTest, OneRowPerPrefetchCapacityAndPolicy) {
  const AccessTrace trace = SmallTrace();
  const std::vector<std::string> policies = {"lru", "least-stale", "belady"};
  const std::vector<double> capacities = {25, 50};
  CacheBenchmarkOptions options;
  options.prefetch_accuracies = {1.0, 0.8};
  absl::StatusOr<std::vector<CacheBenchmarkRow>> rows =
      ComputeCacheBenchmark(trace, policies, capacities, options);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u * 2u * 3u);
  EXPECT_EQ((*rows)[0].prefetch, PrefetchMode::kNone);
  EXPECT_EQ((*rows)[0].capacity_slots, 16);  // 25% of 64.
  EXPECT_EQ((*rows)[17].prefetch_accuracy, 0.8);
  for (const CacheBenchmarkRow& row : *rows) {
    EXPECT_EQ(row.result.accesses, 100 * 4 * 2);
    if (row.policy == "belady") {
      EXPECT_EQ(row.result.hit_rate(), row.belady_hit_rate);
    }
    if (row.prefetch == PrefetchMode::kNone) {
      EXPECT_LE(row.result.hit_rate(), row.belady_hit_rate) << row.policy;
    }
  }
}

TEST(CacheBenchmarkTest, PrintsATablePerPrefetchAndCapacity) {
  const AccessTrace trace = SmallTrace();
  const std::vector<std::string> policies = EvictionPolicyNames();
  const std::vector<double> capacities = {25};
  std::ostringstream out;
  ASSERT_TRUE(RunCacheBenchmark(trace, policies, capacities, out).ok());
  const std::string text = out.str();
  EXPECT_NE(text.find("prefetch none, capacity 25% (16 of 64 experts)"), std::string::npos) << text;
  EXPECT_NE(text.find("prefetch oracle-next-layer (accuracy 1)"), std::string::npos) << text;
  EXPECT_NE(text.find("vs belady"), std::string::npos) << text;
  for (const std::string& name : policies) EXPECT_NE(text.find("\n" + name + " "), std::string::npos) << name;
}

TEST(CacheBenchmarkTest, RejectsBadArguments) {
  const AccessTrace trace = SmallTrace();
  std::ostringstream out;
  const std::vector<std::string> lru = {"lru"};
  const std::vector<std::string> unknown = {"lru", "random"};
  EXPECT_FALSE(RunCacheBenchmark(trace, unknown, std::vector<double>{50}, out).ok());
  EXPECT_FALSE(RunCacheBenchmark(trace, lru, std::vector<double>{0}, out).ok());
  EXPECT_FALSE(RunCacheBenchmark(trace, lru, std::vector<double>{150}, out).ok());
  // 1% of 64 experts is 1 slot: less than the 2 a layer routes to.
  absl::Status status = RunCacheBenchmark(trace, lru, std::vector<double>{1}, out);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("fewer than the 2"), absl::string_view::npos) << status;
  EXPECT_FALSE(RunCacheBenchmark(AccessTrace{}, lru, std::vector<double>{50}, out).ok());
}

// A v2 trace file goes through the engine replay first: a table per
// capacity with every policy's true hit rate, and a capacity too small for
// one layer step is skipped with a note instead of failing the run.
TEST(CacheBenchmarkTest, AnEngineTraceIsReplayedBeforeTheOracleTables) {
  const AccessTrace access = SmallTrace();
  std::vector<TraceStep> steps;
  for (const std::vector<ExpertKey>& pass : access.passes) {
    TraceStep& step = steps.emplace_back();
    step.rows = 1;
    for (size_t i = 0; i < pass.size(); i += 2) {
      step.records.push_back({0, pass[i].layer, {pass[i].expert, pass[i + 1].expert}, {}});
    }
    TracePrediction p;
    p.at_layer = 0;
    p.for_layer = 1;
    p.budget = 1;
    p.experts = {step.records[1].experts[0]};
    step.predictions.push_back(p);
  }
  TraceIoFigures io;
  io.expert_bytes = 4096;
  const std::string path = ::testing::TempDir() + "/bench_cache_replay.trace";
  ASSERT_TRUE(WriteStepTraceFile(path, 4, 16, 2, io, steps).ok());
  std::ostringstream out;
  const std::vector<std::string> policies = {"lru", "least-stale", "belady"};
  const std::vector<double> capacities = {25, 50};
  absl::Status status = RunTraceFileBenchmark(path, policies, capacities, out);
  ASSERT_TRUE(status.ok()) << status;
  const std::string text = out.str();
  EXPECT_NE(text.find("engine replay: 100 steps, 100 recorded predictions"), std::string::npos) << text;
  EXPECT_NE(text.find("replay, capacity 25% (16 of 64 experts)"), std::string::npos) << text;
  EXPECT_NE(text.find("oracle tables"), std::string::npos) << text;
  EXPECT_LT(text.find("replay, capacity 50%"), text.find("oracle tables")) << text;

  std::ostringstream small;
  ASSERT_TRUE(RunReplayBenchmark(*ReadTraceFile(path), policies, std::vector<double>{1}, small).ok());
  EXPECT_NE(small.str().find("skipped"), std::string::npos) << small.str();
}

}  // namespace
}  // namespace expertd::cache
