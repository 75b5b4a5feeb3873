#include "cache/sim/policy_simulator.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"

namespace expertd::cache {
namespace {

// One run of consecutive accesses to the same layer within a pass: what the
// engine does between two OnLayerStart calls.
struct LayerStep {
  size_t pass = 0;
  int32_t layer = 0;
  size_t begin = 0;  // Offsets into the pass.
  size_t end = 0;
};

// A uniform draw in [0, 1) that depends only on its inputs (SplitMix64), so
// a prediction error at one step does not shift the draws of the others.
double HashUniform(uint64_t seed, uint64_t step, uint64_t slot) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (1 + step * 0x100000001B3ull + slot);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

std::vector<LayerStep> SplitIntoLayerSteps(const AccessTrace& trace) {
  std::vector<LayerStep> steps;
  for (size_t p = 0; p < trace.passes.size(); ++p) {
    const std::vector<ExpertKey>& pass = trace.passes[p];
    for (size_t i = 0; i < pass.size(); ++i) {
      if (i == 0 || pass[i].layer != pass[i - 1].layer) steps.push_back(LayerStep{p, pass[i].layer, i, i});
      steps.back().end = i + 1;
    }
  }
  return steps;
}

// Dense per-key state of the simulated cache, sized by the trace's shape.
class SimulatedCache {
 public:
  SimulatedCache(const AccessTrace& trace, EvictionPolicy& policy, int64_t capacity_slots,
                 SimulationResult& result)
      : policy_(policy),
        capacity_slots_(capacity_slots),
        result_(result),
        num_layers_(std::max(trace.num_layers, 1)),
        num_experts_(std::max(trace.num_experts, 1)),
        state_(static_cast<size_t>(num_layers_) * static_cast<size_t>(num_experts_)) {}

  bool Resident(const ExpertKey& key) const { return At(key).resident; }
  void Pin(const ExpertKey& key) { At(key).pin_epoch = pin_epoch_; }
  void NewPinEpoch() { ++pin_epoch_; }
  void SetStep(int64_t step) { step_ = step; }
  bool EvictedSince(const ExpertKey& key, int64_t step) const { return At(key).evicted_step >= step; }

  // Makes room for one more key; false when every resident key is pinned.
  bool MakeRoom() {
    if (resident_count_ < capacity_slots_) return true;
    if (resident_count_ == 0) return false;  // Capacity 0.
    const std::optional<ExpertKey> victim =
        policy_.PickVictim([this](const ExpertKey& key) { return Evictable(key); });
    if (!victim) return false;
    if (!Evictable(*victim)) {
      ++result_.invalid_victims;
      return false;
    }
    KeyState& state = At(*victim);
    state.resident = false;
    state.unused_prefetch = false;
    state.evicted_step = step_;
    --resident_count_;
    ++result_.evictions;
    policy_.OnRemove(*victim);
    return true;
  }

  void Insert(const ExpertKey& key, bool prefetch) {
    KeyState& state = At(key);
    state.resident = true;
    state.unused_prefetch = prefetch;
    ++resident_count_;
    policy_.OnInsert(key, prefetch);
  }

  // A demand hit: true when it is the first use of a prefetched key.
  bool ConsumePrefetch(const ExpertKey& key) {
    KeyState& state = At(key);
    const bool was_unused = state.unused_prefetch;
    state.unused_prefetch = false;
    return was_unused;
  }

 private:
  struct KeyState {
    bool resident = false;
    bool unused_prefetch = false;
    uint64_t pin_epoch = 0;
    int64_t evicted_step = std::numeric_limits<int64_t>::min();  // Never.
  };

  bool Evictable(const ExpertKey& key) const {
    if (key.layer < 0 || key.layer >= num_layers_ || key.expert < 0 || key.expert >= num_experts_) return false;
    const KeyState& state = At(key);
    return state.resident && state.pin_epoch != pin_epoch_;
  }
  KeyState& At(const ExpertKey& key) { return state_[static_cast<size_t>(key.layer) * num_experts_ + key.expert]; }
  const KeyState& At(const ExpertKey& key) const {
    return state_[static_cast<size_t>(key.layer) * num_experts_ + key.expert];
  }

  EvictionPolicy& policy_;
  int64_t capacity_slots_;
  SimulationResult& result_;
  int32_t num_layers_;
  int32_t num_experts_;
  std::vector<KeyState> state_;
  int64_t resident_count_ = 0;
  uint64_t pin_epoch_ = 1;  // Epoch 0 pins nothing.
  int64_t step_ = 0;
};

// The experts the oracle prefetches for the next layer step: `truth`, with
// each entry replaced by a wrong expert of its layer with probability
// 1 - prefetch_accuracy.
void PredictNextLayer(absl::Span<const ExpertKey> truth, const SimulationOptions& options, uint64_t step,
                      int num_experts, std::vector<ExpertKey>& predicted) {
  predicted.assign(truth.begin(), truth.end());
  if (options.prefetch_accuracy >= 1.0) return;
  auto taken = [&](const ExpertKey& key) {
    return std::find(truth.begin(), truth.end(), key) != truth.end() ||
           std::find(predicted.begin(), predicted.end(), key) != predicted.end();
  };
  for (size_t i = 0; i < predicted.size(); ++i) {
    if (HashUniform(options.prefetch_seed, step, 2 * i) < options.prefetch_accuracy) continue;
    // Start at a random expert and walk to the first one neither routed to
    // nor already predicted; keep the true one if there is none.
    const int start = static_cast<int>(HashUniform(options.prefetch_seed, step, 2 * i + 1) * num_experts);
    for (int offset = 0; offset < num_experts; ++offset) {
      const ExpertKey wrong{truth[i].layer, (start + offset) % num_experts};
      if (!taken(wrong)) {
        predicted[i] = wrong;
        break;
      }
    }
  }
}

}  // namespace

absl::Status ValidateAccessTrace(const AccessTrace& trace) {
  if (trace.num_layers <= 0 || trace.num_experts <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("access trace: needs positive layer and expert counts, has ",
                                                   trace.num_layers, " layers and ", trace.num_experts, " experts"));
  }
  for (size_t p = 0; p < trace.passes.size(); ++p) {
    const std::vector<ExpertKey>& pass = trace.passes[p];
    for (size_t i = 0; i < pass.size(); ++i) {
      const ExpertKey& key = pass[i];
      if (key.layer < 0 || key.layer >= trace.num_layers || key.expert < 0 || key.expert >= trace.num_experts) {
        return absl::InvalidArgumentError(absl::StrCat("access trace: access ", i, " of pass ", p, " (",
                                                       key.ToString(), ") is outside ", trace.num_layers,
                                                       " layers x ", trace.num_experts, " experts"));
      }
      if (i > 0 && key.layer < pass[i - 1].layer) {
        return absl::InvalidArgumentError(absl::StrCat("access trace: pass ", p, " goes back from layer ",
                                                       pass[i - 1].layer, " to layer ", key.layer, " at access ",
                                                       i, "; layers must ascend within a pass"));
      }
    }
  }
  return absl::OkStatus();
}

absl::string_view PrefetchModeName(PrefetchMode mode) {
  switch (mode) {
    case PrefetchMode::kNone:
      return "none";
    case PrefetchMode::kOracleNextLayer:
      return "oracle-next-layer";
  }
  return "unknown";
}

SimulationResult Simulate(const AccessTrace& trace, EvictionPolicy& policy, const SimulationOptions& options) {
  SimulationResult result;
  SimulatedCache cache(trace, policy, options.capacity_slots, result);
  const std::vector<LayerStep> steps = SplitIntoLayerSteps(trace);
  const bool prefetch = options.prefetch == PrefetchMode::kOracleNextLayer;
  std::vector<ExpertKey> predicted;
  std::vector<float> layer_scores(static_cast<size_t>(std::max(trace.num_experts, 0)), 0.0f);

  int64_t pass_first_step = 0;
  for (size_t s = 0; s < steps.size(); ++s) {
    const LayerStep& step = steps[s];
    const std::vector<ExpertKey>& pass = trace.passes[step.pass];
    const absl::Span<const ExpertKey> accesses(pass.data() + step.begin, step.end - step.begin);
    if (s == 0 || step.pass != steps[s - 1].pass) {
      policy.OnPassStart();
      pass_first_step = static_cast<int64_t>(s);
    }
    cache.SetStep(static_cast<int64_t>(s));
    policy.OnLayerStart(step.layer);

    if (options.access_scores != nullptr && step.pass < options.access_scores->size()) {
      const std::vector<float>& scores = (*options.access_scores)[step.pass];
      std::fill(layer_scores.begin(), layer_scores.end(), 0.0f);
      for (size_t i = step.begin; i < step.end && i < scores.size(); ++i) {
        const int32_t expert = pass[i].expert;
        if (expert >= 0 && static_cast<size_t>(expert) < layer_scores.size()) layer_scores[expert] = scores[i];
      }
      policy.OnRouterScores(step.layer, layer_scores);
    }

    // The collision window: this pass, plus, with prefetch, the step before
    // its first layer, which is when that layer's experts were prefetched.
    int64_t window_first_step = pass_first_step;
    if (prefetch) window_first_step = std::min(window_first_step, static_cast<int64_t>(s) - 1);

    if (prefetch && s + 1 < steps.size()) {
      // The layer about to run and the experts already prefetched are being
      // computed on or loaded: not victims.
      cache.NewPinEpoch();
      for (const ExpertKey& key : accesses) cache.Pin(key);
      const LayerStep& next = steps[s + 1];
      const absl::Span<const ExpertKey> truth(trace.passes[next.pass].data() + next.begin, next.end - next.begin);
      PredictNextLayer(truth, options, static_cast<uint64_t>(s), trace.num_experts, predicted);
      for (const ExpertKey& key : predicted) {
        cache.Pin(key);
        if (cache.Resident(key)) {
          policy.OnPrefetchHit(key);
          continue;
        }
        if (!cache.MakeRoom()) {
          ++result.dropped_prefetches;
          continue;
        }
        cache.Insert(key, /*prefetch=*/true);
        ++result.prefetch_inserts;
      }
    }

    // Demand accesses: only the experts of this layer already accessed are
    // pinned (being computed on).
    cache.NewPinEpoch();
    for (const ExpertKey& key : accesses) {
      ++result.accesses;
      policy.OnAccess(key);
      if (cache.Resident(key)) {
        ++result.hits;
        if (cache.ConsumePrefetch(key)) ++result.useful_prefetches;
        policy.OnHit(key);
      } else {
        ++result.misses;
        if (cache.EvictedSince(key, window_first_step)) ++result.collision_misses;
        if (cache.MakeRoom()) {
          cache.Insert(key, /*prefetch=*/false);
        } else {
          ++result.uncached_misses;
        }
      }
      cache.Pin(key);
    }
  }
  return result;
}

absl::StatusOr<int64_t> BruteForceOptimalHits(const AccessTrace& trace, int64_t capacity_slots) {
  constexpr size_t kMaxAccesses = 48;
  std::vector<int> bits;          // Per access: its key's bit.
  std::vector<uint64_t> pinned;   // Per access: keys of its layer step accessed before it.
  absl::flat_hash_map<ExpertKey, int> bit_of;
  for (const LayerStep& step : SplitIntoLayerSteps(trace)) {
    uint64_t step_mask = 0;
    for (size_t i = step.begin; i < step.end; ++i) {
      const ExpertKey& key = trace.passes[step.pass][i];
      auto [it, inserted] = bit_of.try_emplace(key, static_cast<int>(bit_of.size()));
      if (it->second >= 64) return absl::InvalidArgumentError("brute force: more than 64 distinct keys");
      bits.push_back(it->second);
      pinned.push_back(step_mask);
      step_mask |= uint64_t{1} << it->second;
    }
  }
  if (bits.size() > kMaxAccesses) {
    return absl::InvalidArgumentError(absl::StrCat("brute force: ", bits.size(), " accesses, at most ", kMaxAccesses));
  }

  // best(pos, resident set) = most hits from access pos on.
  absl::flat_hash_map<std::pair<size_t, uint64_t>, int64_t> memo;
  std::function<int64_t(size_t, uint64_t)> best = [&](size_t pos, uint64_t resident) -> int64_t {
    if (pos == bits.size()) return 0;
    if (auto it = memo.find({pos, resident}); it != memo.end()) return it->second;
    const uint64_t bit = uint64_t{1} << bits[pos];
    int64_t result = 0;
    if (resident & bit) {
      result = 1 + best(pos + 1, resident);
    } else if (std::popcount(resident) < capacity_slots) {
      result = best(pos + 1, resident | bit);
    } else {
      const uint64_t candidates = resident & ~pinned[pos];
      if (candidates == 0) {
        result = best(pos + 1, resident);  // Uncached miss, as in Simulate.
      } else {
        for (uint64_t rest = candidates; rest != 0; rest &= rest - 1) {
          const uint64_t victim = rest & (~rest + 1);
          result = std::max(result, best(pos + 1, (resident & ~victim) | bit));
        }
      }
    }
    memo.emplace(std::make_pair(pos, resident), result);
    return result;
  };
  return best(0, 0);
}

}  // namespace expertd::cache
