#include "predictor/prediction_stats.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace expertd::predictor {
namespace {

// Sorts *ids and drops duplicates, in place.
void SortedUnique(std::vector<int32_t>* ids) {
  std::sort(ids->begin(), ids->end());
  ids->erase(std::unique(ids->begin(), ids->end()), ids->end());
}

}  // namespace

PredictionStats::PredictionStats(int max_distance)
    : figures_(static_cast<size_t>(std::max(max_distance, 0)) + 1) {}

void PredictionStats::Record(absl::Span<const LayerPrediction> predictions) {
  pending_.insert(pending_.end(), predictions.begin(), predictions.end());
}

void PredictionStats::Score(int layer, absl::Span<const int32_t> chosen) {
  std::vector<int32_t> actual(chosen.begin(), chosen.end());
  SortedUnique(&actual);
  std::vector<int32_t> predicted;
  for (const LayerPrediction& p : pending_) {
    // Distance 0 or less is not a prediction; such entries are just forgotten.
    if (p.layer != layer || p.distance < 1) continue;
    predicted.clear();
    for (const auto& [expert, score] : p.experts) predicted.push_back(expert);
    SortedUnique(&predicted);
    uint64_t correct = 0;
    for (size_t i = 0, a = 0; i < predicted.size() && a < actual.size();) {
      if (predicted[i] < actual[a]) {
        ++i;
      } else if (actual[a] < predicted[i]) {
        ++a;
      } else {
        ++correct, ++i, ++a;
      }
    }
    // A lookahead deeper than the constructor's max_distance still counts.
    const auto d = static_cast<size_t>(p.distance);
    if (d >= figures_.size()) figures_.resize(d + 1);
    Figures& f = figures_[d];
    f.predicted += predicted.size();
    f.actual += actual.size();
    f.correct += correct;
  }
  std::erase_if(pending_, [layer](const LayerPrediction& p) { return p.layer == layer; });
}

void PredictionStats::BeginPass() { pending_.clear(); }

std::vector<PredictionStats::Figures> PredictionStats::SinceSnapshot(const std::vector<Figures>& before) const {
  std::vector<Figures> since = figures_;
  // Counts only grow, so each difference is >= 0 for a snapshot of this object.
  for (size_t d = 0; d < since.size() && d < before.size(); ++d) {
    since[d].predicted -= before[d].predicted;
    since[d].actual -= before[d].actual;
    since[d].correct -= before[d].correct;
  }
  return since;
}

PredictionStats::Figures PredictionStats::Compare(absl::Span<const int32_t> predicted,
                                                  absl::Span<const int32_t> chosen) {
  std::vector<int32_t> p(predicted.begin(), predicted.end()), a(chosen.begin(), chosen.end());
  SortedUnique(&p);
  SortedUnique(&a);
  Figures f;
  f.predicted = p.size();
  f.actual = a.size();
  for (size_t i = 0, j = 0; i < p.size() && j < a.size();) {
    if (p[i] < a[j]) {
      ++i;
    } else if (a[j] < p[i]) {
      ++j;
    } else {
      ++f.correct, ++i, ++j;
    }
  }
  return f;
}

}  // namespace expertd::predictor
