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
  EngineFlags flags;
  flags.model_dir = testing::MakeTestModel(dir, "model", o);
  flags.expert_file = dir.Sub("model.experts");
  flags.dram_budget = "1GiB";
  flags.lookahead = INT_MAX;  // sized a vector of 2^31 entries: std::bad_alloc
  flags.threads = 1;
  flags.gpu = "off";
  absl::StatusOr<LoadedEngine> engine = LoadEngine(flags);
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_NE(engine->cache, nullptr);
  ASSERT_NE(engine->prefetcher, nullptr);
  EXPECT_EQ(engine->cache->stats().dram.slots, o.layers * o.experts) << "every expert resident, no more";
}

}  // namespace
}  // namespace expertd
