#ifndef EXPERTD_PREDICTOR_PREDICTORS_INTERNAL_H_
#define EXPERTD_PREDICTOR_PREDICTORS_INTERNAL_H_

// Constructors of the concrete predictors, for MakePredictor only. Each
// predictor lives in its own file (none_predictor.cc, ...); callers go
// through MakePredictor, which validates the options and the shape first.
// Predict implementations resize the output vector rather than clear it, so
// the kept entries' experts vectors keep their storage from token to token.

#include <memory>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "predictor/expert_predictor.h"

namespace expertd::predictor::internal {

std::unique_ptr<ExpertPredictor> NewNonePredictor();
std::unique_ptr<ExpertPredictor> NewPreviousTokenPredictor(const ModelShape& shape, int lookahead);
std::unique_ptr<ExpertPredictor> NewCrossLayerPredictor(const ModelShape& shape, int lookahead,
                                                        int per_layer, kernels::ThreadPool* pool);

}  // namespace expertd::predictor::internal

#endif  // EXPERTD_PREDICTOR_PREDICTORS_INTERNAL_H_
