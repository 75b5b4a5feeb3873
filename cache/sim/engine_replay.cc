#include "cache/sim/engine_replay.h"

#include "cache/sim/policy_simulator.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace expertd::cache {
namespace {

// Load completion times under LoadTimeModel: up to queue_depth loads at
// once, each latency_us before its bytes, the bytes through one pipe.
class LoadClock {
 public:
  LoadClock(const LoadTimeModel& model, uint64_t expert_bytes)
      : latency_us_(model.latency_us),
        transfer_us_(static_cast<double>(expert_bytes) / model.bytes_per_second * 1e6),
        queue_depth_(std::max(1, model.queue_depth)) {}

  // A load issued at now_us (calls come in non-decreasing time): when it
  // lands.
  double Issue(double now_us) {
    Prune(now_us);
    double start = now_us;
    if (static_cast<int>(in_flight_.size()) >= queue_depth_) {
      start = in_flight_.top();  // FIFO: waits for the first queue entry to free
      in_flight_.pop();
    }
    const double transfer_start = std::max(start + latency_us_, pipe_free_us_);
    pipe_free_us_ = transfer_start + transfer_us_;
    in_flight_.push(pipe_free_us_);
    return pipe_free_us_;
  }

  // Loads issued and not landed at now_us.
  int InFlight(double now_us) {
    Prune(now_us);
    return static_cast<int>(in_flight_.size());
  }

 private:
  void Prune(double now_us) {
    while (!in_flight_.empty() && in_flight_.top() <= now_us) in_flight_.pop();
  }

  double latency_us_;
  double transfer_us_;
  int queue_depth_;
  double pipe_free_us_ = 0;
  // Landing times of loads in flight, earliest first.
  std::priority_queue<double, std::vector<double>, std::greater<double>> in_flight_;
};

class Replay {
 public:
  Replay(const LoadedTrace& trace, EvictionPolicy& policy, const ReplayOptions& options, uint64_t expert_bytes)
      : trace_(trace),
        policy_(policy),
        options_(options),
        loads_(options.io, expert_bytes),
        state_(static_cast<size_t>(trace.num_layers) * trace.num_experts),
        layer_scores_(static_cast<size_t>(trace.num_experts), 0.0f),
        issued_(static_cast<size_t>(trace.num_layers), 0),
        tried_(static_cast<size_t>(trace.num_layers)) {}

  ReplayResult Run() {
    for (size_t s = 0; s < trace_.steps.size(); ++s) RunStep(s);
    result_.elapsed_us = now_us_;
    return result_;
  }

 private:
  struct KeyState {
    bool resident = false;
    bool unclaimed_prefetch = false;  // brought by a prefetch, not asked for since
    double land_us = 0;               // resident: when its load lands
    uint64_t pin_epoch = 0;
  };
  // A candidate waiting in the prefetch queue (PrefetchScheduler's Item).
  struct Candidate {
    int32_t layer = 0;
    int32_t expert = 0;
    float score = 0;
  };

  KeyState& At(const ExpertKey& key) {
    return state_[static_cast<size_t>(key.layer) * trace_.num_experts + key.expert];
  }
  bool Ready(const ExpertKey& key) { return At(key).resident && At(key).land_us <= now_us_; }
  bool Evictable(const ExpertKey& key) {
    if (key.layer < 0 || key.layer >= trace_.num_layers || key.expert < 0 || key.expert >= trace_.num_experts) {
      return false;
    }
    const KeyState& s = At(key);
    return s.resident && s.land_us <= now_us_ && s.pin_epoch != pin_epoch_;
  }

  // Frees a slot if the cache is full; false when nothing can go.
  bool MakeRoom() {
    if (resident_ < options_.capacity_slots) return true;
    const std::optional<ExpertKey> victim = policy_.PickVictim([this](const ExpertKey& k) { return Evictable(k); });
    if (!victim || !Evictable(*victim)) return false;
    KeyState& s = At(*victim);
    s.resident = false;
    s.unclaimed_prefetch = false;
    --resident_;
    ++result_.evictions;
    policy_.OnRemove(*victim);
    return true;
  }

  void Insert(const ExpertKey& key, bool prefetch) {
    KeyState& s = At(key);
    s.resident = true;
    s.unclaimed_prefetch = prefetch;
    s.land_us = loads_.Issue(now_us_);
    ++resident_;
    policy_.OnInsert(key, prefetch);
    ++(prefetch ? result_.prefetch_loads : result_.demand_loads);
  }

  // ExpertCache::Prefetch: false when resident, loading or no slot frees.
  bool Prefetch(const ExpertKey& key) {
    if (At(key).resident) {
      ++result_.prefetch_skipped_resident;
      policy_.OnPrefetchHit(key);
      return false;
    }
    if (!MakeRoom()) {
      ++result_.prefetch_dropped;
      return false;
    }
    Insert(key, /*prefetch=*/true);
    return true;
  }

  int Budget() const { return options_.budget_per_layer > 0 ? options_.budget_per_layer : recorded_budget_; }

  // PrefetchScheduler::Pump: nearest layer first, then score; a layer stops
  // at its budget of reads issued; nothing is issued while the reads in
  // flight reach max_prefetch_in_flight.
  void Pump() {
    const int budget = Budget();
    std::vector<Candidate> kept;
    bool full = false;
    for (const Candidate& c : queue_) {
      if (!full && issued_[c.layer] < budget) {
        if (loads_.InFlight(now_us_) >= options_.max_prefetch_in_flight) {
          full = true;
        } else {
          tried_[c.layer].push_back(c.expert);
          if (Prefetch({c.layer, c.expert})) ++issued_[c.layer];
          continue;
        }
      }
      kept.push_back(c);
    }
    queue_ = std::move(kept);
  }

  void Submit(const TracePrediction& p) {
    recorded_budget_ = p.budget;
    std::erase_if(queue_, [&](const Candidate& c) { return c.layer == p.for_layer; });
    for (size_t i = 0; i < p.experts.size(); ++i) {
      const int32_t expert = p.experts[i];
      const std::vector<int32_t>& tried = tried_[p.for_layer];
      if (std::find(tried.begin(), tried.end(), expert) != tried.end()) continue;
      // Without scores the file's order is the rank: keep it.
      const float score = p.scores.empty() ? -static_cast<float>(i) : p.scores[i];
      queue_.push_back(Candidate{p.for_layer, expert, score});
    }
    std::stable_sort(queue_.begin(), queue_.end(), [](const Candidate& a, const Candidate& b) {
      if (a.layer != b.layer) return a.layer < b.layer;
      return a.score > b.score;
    });
  }

  // Prefetcher::PrefetchNextToken: the next step's layer, in rank order, up
  // to the budget, while reads in flight allow.
  void PrefetchNextStep(const TracePrediction& p) {
    const int budget = options_.budget_per_layer > 0 ? options_.budget_per_layer : p.budget;
    int issued = 0;
    for (int32_t expert : p.experts) {
      if (issued >= budget || loads_.InFlight(now_us_) >= options_.max_prefetch_in_flight) break;
      if (Prefetch({p.for_layer, expert})) ++issued;
    }
  }

  double ComputeUs(const TraceStep& step, int32_t layer) const {
    if (options_.compute_us_per_layer > 0) return options_.compute_us_per_layer;
    for (const TraceLayerCompute& c : step.compute) {
      if (c.layer == layer) return c.compute_us;
    }
    return options_.default_compute_us;
  }

  void RunStep(size_t s) {
    const TraceStep& step = trace_.steps[s];
    const std::vector<ExpertKey>& pass = trace_.trace.passes[s];
    ++result_.steps;
    result_.rows += step.rows;
    policy_.OnPassStart();
    // PrefetchScheduler::BeginPass: what was queued is dropped.
    result_.prefetch_dropped += static_cast<int64_t>(queue_.size());
    queue_.clear();
    std::fill(issued_.begin(), issued_.end(), 0);
    for (std::vector<int32_t>& t : tried_) t.clear();

    for (size_t begin = 0; begin < pass.size();) {
      const int32_t layer = pass[begin].layer;
      size_t end = begin;
      while (end < pass.size() && pass[end].layer == layer) ++end;
      RunLayer(s, step, layer, begin, end);
      begin = end;
    }
    now_us_ += options_.step_gap_us;
  }

  void RunLayer(size_t s, const TraceStep& step, int32_t layer, size_t begin, size_t end) {
    const std::vector<ExpertKey>& pass = trace_.trace.passes[s];
    policy_.OnLayerStart(layer);
    // BeginLayer: queued candidates for this layer or earlier are stale.
    result_.prefetch_dropped += std::erase_if(queue_, [&](const Candidate& c) { return c.layer <= layer; });
    Pump();
    if (options_.access_scores != nullptr && s < options_.access_scores->size()) {
      const std::vector<float>& scores = (*options_.access_scores)[s];
      std::fill(layer_scores_.begin(), layer_scores_.end(), 0.0f);
      for (size_t i = begin; i < end && i < scores.size(); ++i) layer_scores_[pass[i].expert] = scores[i];
      policy_.OnRouterScores(layer, layer_scores_);
    }

    // ExpertPlan: the ready experts are pinned first, then the missing ones
    // are asked for (they may evict only what this layer does not use).
    ++pin_epoch_;
    // Every access reaches the policy in the trace's order (expert order,
    // as ExpertPlan asks), before any eviction: Belady's cursor walks the
    // trace, and an access reported out of order would leave a key looking
    // due now until its next access.
    for (size_t i = begin; i < end; ++i) policy_.OnAccess(pass[i]);
    std::vector<double> pending_lands;
    std::vector<bool> was_ready(end - begin, false);
    int ready = 0;
    for (size_t i = begin; i < end; ++i) {
      const ExpertKey& key = pass[i];
      At(key).pin_epoch = pin_epoch_;
      if (!Ready(key)) continue;
      was_ready[i - begin] = true;
      ++result_.accesses;
      ++ready;
      KeyState& st = At(key);
      if (st.unclaimed_prefetch) {
        ++result_.hidden;
        st.unclaimed_prefetch = false;
      } else {
        ++result_.hits;
      }
      policy_.OnHit(key);
    }
    for (size_t i = begin; i < end; ++i) {
      const ExpertKey& key = pass[i];
      if (was_ready[i - begin]) continue;
      KeyState& st = At(key);
      ++result_.accesses;
      ++result_.misses;
      if (st.resident) {
        // A load in flight: a prefetch that has not landed.
        if (st.unclaimed_prefetch) ++result_.late_prefetches;
        st.unclaimed_prefetch = false;
        policy_.OnHit(key);
        pending_lands.push_back(st.land_us);
      } else if (MakeRoom()) {
        Insert(key, /*prefetch=*/false);
        pending_lands.push_back(At(key).land_us);
      } else {
        ++result_.uncached_misses;
        ++result_.demand_loads;
        pending_lands.push_back(loads_.Issue(now_us_));
      }
      At(key).pin_epoch = pin_epoch_;
    }

    // OnRouted: the predictions made at this layer.
    if (options_.prefetch) {
      for (const TracePrediction& p : step.predictions) {
        if (p.at_layer != layer || p.for_layer >= trace_.num_layers) continue;
        if (p.next_step) {
          PrefetchNextStep(p);
        } else {
          Submit(p);
        }
      }
      Pump();
    }

    // Compute: the ready experts, then each missing one once it lands.
    const double per_expert_us = ComputeUs(step, layer) / static_cast<double>(end - begin);
    double t = now_us_ + per_expert_us * ready;
    for (double land : pending_lands) {
      const double wait = std::max(0.0, land - t);
      result_.stall_us += wait;
      t = std::max(t, land) + per_expert_us;
    }
    now_us_ = t;
    // OnLayerDone: pins released, the queue pumped again.
    ++pin_epoch_;
    if (options_.prefetch) Pump();
  }

  const LoadedTrace& trace_;
  EvictionPolicy& policy_;
  const ReplayOptions& options_;
  LoadClock loads_;
  std::vector<KeyState> state_;
  std::vector<float> layer_scores_;
  std::vector<int> issued_;                   // per layer: prefetch reads issued this step
  std::vector<std::vector<int32_t>> tried_;   // per layer: candidates tried this step
  std::vector<Candidate> queue_;
  int recorded_budget_ = 1;
  int64_t resident_ = 0;
  uint64_t pin_epoch_ = 1;
  double now_us_ = 0;
  ReplayResult result_;
};

}  // namespace

LoadTimeModel MeasuredLoadModel(const TraceIoFigures& io, int queue_depth) {
  LoadTimeModel model;
  model.expert_bytes = io.expert_bytes;
  if (queue_depth > 0) model.queue_depth = queue_depth;
  if (io.read_bytes_per_second > 0) model.bytes_per_second = io.read_bytes_per_second;
  if (io.load_us > 0) {
    const double transfer_us = static_cast<double>(io.expert_bytes) / model.bytes_per_second * 1e6;
    model.latency_us = std::max(0.0, io.load_us - transfer_us);
  }
  return model;
}

absl::StatusOr<ReplayResult> ReplayEngineTrace(const LoadedTrace& trace, EvictionPolicy& policy,
                                               const ReplayOptions& options) {
  if (absl::Status status = ValidateAccessTrace(trace.trace); !status.ok()) return status;
  if (trace.steps.size() != trace.trace.passes.size()) {
    return absl::InvalidArgumentError("replay: the trace's steps and passes disagree (not read by ReadTraceFile?)");
  }
  const uint64_t expert_bytes = options.io.expert_bytes > 0 ? options.io.expert_bytes : trace.io.expert_bytes;
  if (expert_bytes == 0) {
    return absl::InvalidArgumentError(
        "replay: the load-time model needs an expert's size in bytes; the trace has no expert_bytes (a v1 trace): "
        "give --expert-bytes");
  }
  if (!(options.io.bytes_per_second > 0) || options.io.latency_us < 0) {
    return absl::InvalidArgumentError(absl::StrCat("replay: load bandwidth ", options.io.bytes_per_second,
                                                   " B/s must be > 0 and latency ", options.io.latency_us,
                                                   " us >= 0"));
  }
  int64_t widest = 0;
  for (const std::vector<ExpertKey>& pass : trace.trace.passes) {
    int64_t run = 0;
    for (size_t i = 0; i < pass.size(); ++i) {
      run = (i > 0 && pass[i].layer == pass[i - 1].layer) ? run + 1 : 1;
      widest = std::max(widest, run);
    }
  }
  if (options.capacity_slots < widest) {
    return absl::InvalidArgumentError(absl::StrCat("replay: capacity ", options.capacity_slots,
                                                   " experts is fewer than the ", widest,
                                                   " distinct experts one layer step routes to"));
  }
  Replay replay(trace, policy, options, expert_bytes);
  return replay.Run();
}

absl::StatusOr<ReplayResult> ReplayEngineTrace(const LoadedTrace& trace, absl::string_view policy,
                                               const ReplayOptions& options) {
  PolicyOptions policy_options;
  policy_options.num_layers = trace.num_layers;
  policy_options.num_experts = trace.num_experts;
  // Not owned: no policy outlives this call.
  policy_options.future = std::shared_ptr<const AccessTrace>(std::shared_ptr<const AccessTrace>(), &trace.trace);
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> made = MakeEvictionPolicy(policy, policy_options);
  if (!made.ok()) return made.status();
  return ReplayEngineTrace(trace, **made, options);
}

}  // namespace expertd::cache
