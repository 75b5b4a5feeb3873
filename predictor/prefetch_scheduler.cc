#include "predictor/prefetch_scheduler.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace expertd::predictor {

PrefetchScheduler::PrefetchScheduler(PrefetchSchedulerOptions options,
                                     std::function<bool(int layer, int expert)> issue,
                                     std::function<int()> in_flight)
    : options_(options), issue_(std::move(issue)), in_flight_(std::move(in_flight)) {}

PrefetchScheduler::LayerState& PrefetchScheduler::StateOf(int layer) {
  const auto ul = static_cast<size_t>(layer);
  if (ul >= layers_.size()) layers_.resize(ul + 1);
  return layers_[ul];
}

bool PrefetchScheduler::Tried(int layer, int32_t expert) {
  const std::vector<int32_t>& tried = StateOf(layer).tried;
  return std::find(tried.begin(), tried.end(), expert) != tried.end();
}

template <typename Pred>
void PrefetchScheduler::DropQueued(Pred pred, uint64_t* counter) {
  *counter += std::erase_if(queue_, pred);
}

void PrefetchScheduler::BeginPass() {
  DropQueued([](const Item&) { return true; }, &stats_.dropped_stale);
  // Keep each layer's tried vector's storage: passes repeat per token.
  for (LayerState& s : layers_) {
    s.issued = 0;
    s.tried.clear();
  }
  current_layer_ = -1;
}

void PrefetchScheduler::BeginLayer(int layer) {
  current_layer_ = layer;
  DropQueued([layer](const Item& item) { return item.layer <= layer; }, &stats_.dropped_stale);
}

void PrefetchScheduler::Submit(absl::Span<const LayerPrediction> predictions) {
  for (const LayerPrediction& p : predictions) {
    const int layer = p.layer;
    if (layer <= current_layer_ || layer < 0) continue;
    DropQueued([layer](const Item& item) { return item.layer == layer; }, &stats_.replaced);
    const size_t first_new = queue_.size();
    for (const auto& [expert, score] : p.experts) {
      if (score < options_.min_score) {
        ++stats_.below_min_score;
        continue;
      }
      if (Tried(layer, expert)) continue;
      const bool duplicate = std::any_of(queue_.begin() + static_cast<std::ptrdiff_t>(first_new), queue_.end(),
                                         [expert](const Item& item) { return item.expert == expert; });
      if (duplicate) continue;
      queue_.push_back(Item{layer, expert, score});
      ++stats_.queued;
    }
  }
  std::sort(queue_.begin(), queue_.end(), [](const Item& a, const Item& b) {
    if (a.layer != b.layer) return a.layer < b.layer;
    if (a.score != b.score) return a.score > b.score;
    return a.expert < b.expert;
  });
}

void PrefetchScheduler::Pump() {
  const int budget = per_layer_budget();
  bool device_full = false;
  size_t kept = 0;
  for (size_t i = 0; i < queue_.size(); ++i) {
    const Item item = queue_[i];
    if (!device_full) {
      LayerState& state = StateOf(item.layer);
      // A layer over budget keeps its items queued (a re-measured budget may
      // grow); BeginLayer drops them as stale. Later layers may still issue.
      if (state.issued < budget) {
        if (in_flight_() >= options_.max_in_flight) {
          device_full = true;
        } else {
          state.tried.push_back(item.expert);
          if (issue_(item.layer, item.expert)) {
            ++state.issued;
            ++stats_.issued;
          } else {
            ++stats_.skipped_resident;
          }
          continue;
        }
      }
    }
    queue_[kept++] = item;
  }
  queue_.resize(kept);
}

namespace {

double Blend(double average, double sample, double weight) {
  // The first sample starts the average (0 means none yet).
  return average > 0.0 ? average + weight * (sample - average) : sample;
}

}  // namespace

void PrefetchScheduler::RecordLayerCompute(double seconds) {
  if (seconds > 0.0) avg_layer_compute_s_ = Blend(avg_layer_compute_s_, seconds, options_.ema_weight);
}

void PrefetchScheduler::RecordLoadThroughput(double bytes_per_second) {
  if (bytes_per_second > 0.0) {
    avg_load_bytes_per_s_ = Blend(avg_load_bytes_per_s_, bytes_per_second, options_.ema_weight);
  }
}

int PrefetchScheduler::per_layer_budget() const {
  if (options_.fixed_budget_per_layer > 0) return options_.fixed_budget_per_layer;
  if (avg_layer_compute_s_ <= 0.0 || avg_load_bytes_per_s_ <= 0.0 || options_.expert_bytes == 0) return 1;
  // Tiny epsilon so 10 ms at 2 loads per 10 ms gives 2, not 1.999... -> 1.
  const double loads_per_layer = avg_layer_compute_s_ * avg_load_bytes_per_s_ / static_cast<double>(options_.expert_bytes);
  double upper = options_.num_experts > 0 ? options_.num_experts : 1e6;
  if (options_.max_budget_per_layer > 0) upper = std::min(upper, static_cast<double>(options_.max_budget_per_layer));
  return static_cast<int>(std::clamp(std::floor(loads_per_layer + 1e-9), 1.0, upper));
}

}  // namespace expertd::predictor
