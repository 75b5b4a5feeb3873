#ifndef EXPERTD_PREDICTOR_PREDICTION_STATS_H_
#define EXPERTD_PREDICTOR_PREDICTION_STATS_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "predictor/expert_predictor.h"

namespace expertd::predictor {

// Precision and recall of predictions per lookahead distance, scored when
// the true routing of the predicted layer is known.
//   precision = |predicted ∩ actual| / |predicted|
//   recall    = |predicted ∩ actual| / |actual|
// where predicted is the set of experts the prediction named for that layer
// and actual the union of experts the layer's tokens routed to.
class PredictionStats {
 public:
  explicit PredictionStats(int max_distance);
  // Remember predictions made at some layer (copied).
  void Record(absl::Span<const LayerPrediction> predictions);
  // Score every recorded prediction for `layer` against its true routing
  // ([n_tokens][k]) and forget them. Call once per layer per pass.
  void Score(int layer, absl::Span<const int32_t> chosen);
  // New pass: predictions not scored (e.g. for layers past the last) are dropped.
  void BeginPass();

  struct Figures {
    uint64_t predicted = 0;  // sum of |predicted|
    uint64_t actual = 0;     // sum of |actual|
    uint64_t correct = 0;    // sum of |predicted ∩ actual|
    double precision() const { return predicted ? static_cast<double>(correct) / predicted : 0.0; }
    double recall() const { return actual ? static_cast<double>(correct) / actual : 0.0; }
  };
  // [distance], index 0 unused.
  const std::vector<Figures>& by_distance() const { return figures_; }
  // One prediction against one layer's routing ([n_tokens][k]), as Score
  // counts it: repeated ids count once.
  static Figures Compare(absl::Span<const int32_t> predicted, absl::Span<const int32_t> chosen);
  // by_distance() now less an earlier copy of it (`before`), distance by
  // distance: the figures of one measured stretch (a bench's timed run after
  // its warm-up). Distances `before` lacks count from zero.
  std::vector<Figures> SinceSnapshot(const std::vector<Figures>& before) const;

 private:
  std::vector<Figures> figures_;
  std::vector<LayerPrediction> pending_;
};

}  // namespace expertd::predictor

#endif  // EXPERTD_PREDICTOR_PREDICTION_STATS_H_
