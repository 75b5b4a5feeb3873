#include "predictor/prediction_stats.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace expertd::predictor {
namespace {

LayerPrediction Prediction(int layer, int distance, std::vector<int32_t> experts) {
  LayerPrediction p;
  p.layer = layer;
  p.distance = distance;
  for (int32_t e : experts) p.experts.emplace_back(e, 1.0f);
  return p;
}

TEST(PredictionStatsTest, PrecisionAndRecallPerDistance) {
  PredictionStats stats(2);
  stats.BeginPass();
  // Made at layer 1 for layer 3 (distance 2), then at layer 2 (distance 1).
  stats.Record(std::vector<LayerPrediction>{Prediction(3, 2, {5})});
  stats.Record(std::vector<LayerPrediction>{Prediction(3, 1, {1, 2, 3, 4})});
  // Layer 3's two tokens chose {2, 4} and {5, 2}: actual = {2, 4, 5}.
  stats.Score(3, std::vector<int32_t>{2, 4, 5, 2});

  const auto& d = stats.by_distance();
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[1].predicted, 4u);
  EXPECT_EQ(d[1].actual, 3u);
  EXPECT_EQ(d[1].correct, 2u);
  EXPECT_DOUBLE_EQ(d[1].precision(), 0.5);
  EXPECT_DOUBLE_EQ(d[1].recall(), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(d[2].precision(), 1.0);
  EXPECT_DOUBLE_EQ(d[2].recall(), 1.0 / 3.0);

  // Scored predictions are forgotten.
  stats.Score(3, std::vector<int32_t>{1, 2});
  EXPECT_EQ(stats.by_distance()[1].predicted, 4u);
}

TEST(PredictionStatsTest, BeginPassDropsUnscoredAndOtherLayersWait) {
  PredictionStats stats(1);
  stats.Record(std::vector<LayerPrediction>{Prediction(4, 1, {0, 1}), Prediction(5, 1, {7})});
  stats.Score(4, std::vector<int32_t>{1});
  EXPECT_EQ(stats.by_distance()[1].predicted, 2u);
  EXPECT_EQ(stats.by_distance()[1].correct, 1u);
  stats.BeginPass();  // layer 5's prediction is never scored
  stats.Score(5, std::vector<int32_t>{7});
  EXPECT_EQ(stats.by_distance()[1].predicted, 2u);
  EXPECT_EQ(stats.by_distance()[1].actual, 1u);
  EXPECT_DOUBLE_EQ(PredictionStats::Figures{}.precision(), 0.0);
}

}  // namespace
}  // namespace expertd::predictor
