#ifndef EXPERTD_TESTS_TESTING_ALL_LOGITS_H_
#define EXPERTD_TESTS_TESTING_ALL_LOGITS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/expert_source.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "model/model.h"
#include "gtest/gtest.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd::testing {

// The CPU pass's logits of every position of `tokens` ([tokens][vocab]),
// computed from scratch on two threads; experts from `experts` when given,
// else the model's own. A failed pass fails the test and returns what it has.
inline std::vector<float> AllPositionLogits(const model::Model& model, absl::Span<const int32_t> tokens,
                                            engine::ExpertSource* experts = nullptr) {
  kernels::ThreadPool pool(2);
  engine::ForwardPass forward(model, &pool, experts);
  engine::KvCache kv(model.config(), 64);
  engine::ForwardOptions options;
  options.all_logits = true;
  std::vector<float> logits;
  const absl::Status status = forward.Run(tokens, kv, options, &logits);
  EXPECT_TRUE(status.ok()) << status;
  return logits;
}

}  // namespace expertd::testing

#endif  // EXPERTD_TESTS_TESTING_ALL_LOGITS_H_
