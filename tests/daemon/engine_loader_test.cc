// LoadEngine's bounds on settings that size memory: a prefetch lookahead
// past the model's layers and a DRAM budget past its experts are lowered to
// what the model can use instead of being allocated.

#include "daemon/engine_loader.h"

#include <climits>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/test_models.h"

namespace expertd {
namespace {

TEST(EngineLoaderTest, LookaheadAndBudgetAreBoundedByTheModel) {
  testing::ScopedTempDir dir("engine_loader");
  tools::MakeModelOptions o;  // olmoe: 2 layers of 8 experts
  EngineOptions options;
  options.model_dir = testing::MakeTestModel(dir, "model", o);
  options.reader.path = dir.Sub("model.experts");
  options.cache.dram_budget_bytes = uint64_t{1} << 30;
  options.prefetch.predictor.lookahead = INT_MAX;  // sized a vector of 2^31 entries: std::bad_alloc
  options.threads = 1;
  options.device.gpu = GpuMode::kOff;
  absl::StatusOr<LoadedEngine> engine = LoadEngine(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_NE(engine->cache, nullptr);
  ASSERT_NE(engine->prefetcher, nullptr);
  EXPECT_EQ(engine->cache->stats().dram.slots, o.layers * o.experts) << "every expert resident, no more";
}

}  // namespace
}  // namespace expertd
