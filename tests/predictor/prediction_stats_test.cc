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

TEST(PredictionStatsTest, SinceSnapshotCountsOnlyTheLaterStretchAtEveryDistance) {
  PredictionStats stats(1);
  // Warm-up: one distance-1 prediction, fully right.
  stats.Record(std::vector<LayerPrediction>{Prediction(2, 1, {3})});
  stats.Score(2, std::vector<int32_t>{3});
  const std::vector<PredictionStats::Figures> before = stats.by_distance();
  ASSERT_EQ(before.size(), 2u);

  // Measured stretch: distance 1 half right, and a distance 3 (beyond the
  // constructor's max) that the snapshot has not seen.
  stats.BeginPass();
  stats.Record(std::vector<LayerPrediction>{Prediction(2, 1, {3, 4}), Prediction(4, 3, {6, 7, 8})});
  stats.Score(2, std::vector<int32_t>{4, 5});
  stats.Score(4, std::vector<int32_t>{8});
  const std::vector<PredictionStats::Figures> since = stats.SinceSnapshot(before);
  ASSERT_EQ(since.size(), 4u);
  EXPECT_EQ(since[1].predicted, 2u);
  EXPECT_EQ(since[1].actual, 2u);
  EXPECT_EQ(since[1].correct, 1u);
  EXPECT_DOUBLE_EQ(since[1].precision(), 0.5);
  EXPECT_EQ(since[2].predicted, 0u);
  EXPECT_DOUBLE_EQ(since[3].precision(), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(since[3].recall(), 1.0);
  // The running totals still include the warm-up.
  EXPECT_EQ(stats.by_distance()[1].predicted, 3u);
}

}  // namespace
}  // namespace expertd::predictor
