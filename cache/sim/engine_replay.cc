#include "cache/sim/engine_replay.h"

#include "cache/prefetch_guess.h"
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

// Load completion times under LoadTimeModel. A load waits latency_us, then
// transfers its bytes; up to parallel_transfers loads, earliest issued
// first, share the bandwidth equally (an SSD serves overlapping reads in
// parallel, so a burst lands nearly together, but in about the order it was
// issued: which decides whether a prefetch issued just after a layer's own
// loads is ready for the next layer). At most queue_depth loads are in flight; a load
// beyond that starts when the first in flight lands. Land times are
// computed from the loads issued so far: the replay asks for them only
// where no load can be issued before the time it asks about.
class LoadClock {
 public:
  LoadClock(const LoadTimeModel& model, uint64_t expert_bytes)
      : latency_us_(model.latency_us),
        bytes_per_us_(model.bytes_per_second / 1e6),
        expert_bytes_(static_cast<double>(expert_bytes)),
        queue_depth_(std::max(1, model.queue_depth)),
        parallel_transfers_(model.parallel_transfers > 0 ? model.parallel_transfers
                                                         : std::numeric_limits<int>::max()) {}

  // A load issued at now_us (calls come in non-decreasing time): its id.
  int Issue(double now_us) {
    Advance(now_us);
    double start = now_us;
    if (static_cast<int>(active_.size()) >= queue_depth_) {
      double first = std::numeric_limits<double>::infinity();
      for (const auto& [id, land] : Future()) first = std::min(first, land);
      start = std::max(start, first);
    }
    loads_.push_back(Load{start + latency_us_, expert_bytes_, -1});
    active_.push_back(static_cast<int>(loads_.size()) - 1);
    return static_cast<int>(loads_.size()) - 1;
  }

  bool Landed(int id, double now_us) {
    Advance(now_us);
    return loads_[id].land_us >= 0;
  }

  // When load `id` lands, if no other load is issued before then.
  double LandTime(int id) {
    if (loads_[id].land_us >= 0) return loads_[id].land_us;
    for (const auto& [other, land] : Future()) {
      if (other == id) return land;
    }
    return loads_[id].land_us;  // not reached: an active load lands
  }

  // Loads issued and not landed at now_us.
  int InFlight(double now_us) {
    Advance(now_us);
    return static_cast<int>(active_.size());
  }

 private:
  struct Load {
    double transfer_start_us = 0;
    double remaining_bytes = 0;
    double land_us = -1;  // -1: not landed
  };

  void Advance(double until_us) { Simulate(loads_, active_, now_us_, until_us, nullptr); }

  // (id, land time) of every active load, if no more are issued.
  std::vector<std::pair<int, double>> Future() const {
    std::vector<Load> loads;  // the active ones, renumbered from 0
    std::vector<int> active;
    for (int id : active_) {
      active.push_back(static_cast<int>(loads.size()));
      loads.push_back(loads_[id]);
    }
    double t = now_us_;
    std::vector<std::pair<int, double>> landed;
    Simulate(loads, active, t, std::numeric_limits<double>::infinity(), &landed);
    for (auto& [id, land] : landed) id = active_[id];
    return landed;
  }

  // Runs the loads from t to until_us (or until none is left), recording
  // each landing (into *landed too when given).
  void Simulate(std::vector<Load>& loads, std::vector<int>& active, double& t, double until_us,
                std::vector<std::pair<int, double>>* landed) const {
    constexpr double kInf = std::numeric_limits<double>::infinity();
    while (t < until_us && !active.empty()) {
      // Issue order (ids ascend with it) decides who transfers when more
      // than parallel_transfers_ could.
      std::sort(active.begin(), active.end());
      int transferring = 0;
      double next_start = kInf;
      double least_remaining = kInf;
      for (int id : active) {
        if (loads[id].transfer_start_us <= t) {
          if (transferring < parallel_transfers_) {
            ++transferring;
            least_remaining = std::min(least_remaining, loads[id].remaining_bytes);
          }
        } else {
          next_start = std::min(next_start, loads[id].transfer_start_us);
        }
      }
      if (transferring == 0) {
        t = std::min(next_start, until_us);
        continue;
      }
      const double share = bytes_per_us_ / transferring;
      const double next = std::min({t + least_remaining / share, next_start, until_us});
      int served = 0;
      for (size_t i = 0; i < active.size();) {
        Load& load = loads[active[i]];
        if (load.transfer_start_us <= t && served < transferring) {
          ++served;
          load.remaining_bytes -= share * (next - t);
          if (load.remaining_bytes <= 1e-6 * expert_bytes_ + 1e-9) {
            load.land_us = next;
            if (landed != nullptr) landed->push_back({active[i], next});
            active.erase(active.begin() + static_cast<std::ptrdiff_t>(i));
            continue;
          }
        }
        ++i;
      }
      t = next;
    }
    if (t < until_us && until_us != kInf) t = until_us;
  }

  double latency_us_;
  double bytes_per_us_;
  double expert_bytes_;
  int queue_depth_;
  int parallel_transfers_;
  std::vector<Load> loads_;  // every load issued, by id
  std::vector<int> active_;  // ids not landed
  double now_us_ = 0;        // loads_ are simulated up to here
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
    for (size_t s = 0; s < trace_.steps.size(); ++s) {
      step_ = static_cast<int64_t>(s);
      RunStep(s);
    }
    result_.elapsed_us = now_us_;
    return result_;
  }

 private:
  struct KeyState {
    bool resident = false;
    bool unclaimed_prefetch = false;  // brought by a prefetch, not asked for since
    int load = -1;                    // resident: its load (LoadClock id)
    uint64_t pin_epoch = 0;
    int64_t evicted_in_step = -1;     // the step that last evicted it
    PrefetchGuess guess;  // while unclaimed_prefetch: the step (pass) and layer it was for
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
  bool Ready(const ExpertKey& key) { return At(key).resident && loads_.Landed(At(key).load, now_us_); }
  bool Evictable(const ExpertKey& key) {
    if (key.layer < 0 || key.layer >= trace_.num_layers || key.expert < 0 || key.expert >= trace_.num_experts) {
      return false;
    }
    const KeyState& s = At(key);
    return s.resident && s.pin_epoch != pin_epoch_ && loads_.Landed(s.load, now_us_);
  }

  // SlotTier::TakeWrongGuess: the first unclaimed prefetch whose layer has
  // run, dropping from guesses_ what is no longer an unclaimed prefetch.
  std::optional<ExpertKey> TakeWrongGuess() {
    std::optional<ExpertKey> found;
    std::erase_if(guesses_, [&](const ExpertKey& key) {
      const KeyState& s = At(key);
      if (!s.resident || !s.unclaimed_prefetch) return true;
      if (!found && s.guess.LayerRan(static_cast<uint64_t>(step_), layer_) && Evictable(key)) {
        found = key;
        return true;
      }
      return false;
    });
    return found;
  }

  // Frees a slot if the cache is full; false when nothing can go.
  bool MakeRoom() {
    if (resident_ < options_.capacity_slots) return true;
    std::optional<ExpertKey> victim = options_.wrong_guesses_first ? TakeWrongGuess() : std::nullopt;
    if (!victim) victim = policy_.PickVictim([this](const ExpertKey& k) { return Evictable(k); });
    if (!victim || !Evictable(*victim)) return false;
    KeyState& s = At(*victim);
    s.resident = false;
    s.unclaimed_prefetch = false;
    s.evicted_in_step = step_;
    --resident_;
    ++result_.evictions;
    policy_.OnRemove(*victim);
    return true;
  }

  void Insert(const ExpertKey& key, bool prefetch) {
    KeyState& s = At(key);
    s.resident = true;
    s.unclaimed_prefetch = prefetch;
    if (prefetch) {
      s.guess = PrefetchGuess::Made(key.layer, static_cast<uint64_t>(step_), layer_);
      guesses_.push_back(key);
    }
    s.load = loads_.Issue(now_us_);
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
    if (s > 0) now_us_ += options_.step_gap_us >= 0 ? options_.step_gap_us : std::max(0.0, step.gap_us);
    ++result_.steps;
    result_.rows += step.rows;
    policy_.OnPassStart();
    layer_ = -1;
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
  }

  void RunLayer(size_t s, const TraceStep& step, int32_t layer, size_t begin, size_t end) {
    const std::vector<ExpertKey>& pass = trace_.trace.passes[s];
    layer_ = layer;
    policy_.OnLayerStart(layer);
    // BeginLayer: queued candidates for this layer or earlier are stale.
    result_.prefetch_dropped += std::erase_if(queue_, [&](const Candidate& c) { return c.layer <= layer; });
    Pump();
    const auto recorded = std::find_if(step.router_scores.begin(), step.router_scores.end(),
                                       [&](const TraceLayerScores& l) { return l.layer == layer; });
    if (options_.router_scores && recorded != step.router_scores.end()) {
      policy_.OnRouterScores(layer, recorded->scores);
    } else if (options_.access_scores != nullptr && s < options_.access_scores->size()) {
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
    std::vector<int> pending_loads;
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
      if (st.evicted_in_step == step_) ++result_.collision_misses;
      if (st.resident) {
        // A load in flight: a prefetch that has not landed.
        if (st.unclaimed_prefetch) ++result_.late_prefetches;
        st.unclaimed_prefetch = false;
        policy_.OnHit(key);
        pending_loads.push_back(st.load);
      } else if (MakeRoom()) {
        Insert(key, /*prefetch=*/false);
        pending_loads.push_back(At(key).load);
      } else {
        ++result_.uncached_misses;
        ++result_.demand_loads;
        pending_loads.push_back(loads_.Issue(now_us_));
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
    for (int load : pending_loads) {
      const double land = loads_.LandTime(load);
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
  int64_t step_ = 0;  // the step running
  int32_t layer_ = -1;  // the MoE layer running; -1 before the step's first
  std::vector<ExpertKey> guesses_;  // prefetched keys, possibly claimed since (TakeWrongGuess)
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

int64_t MaxExpertsPerRow(const LoadedTrace& trace) {
  int64_t most = 0;
  for (const TraceStep& step : trace.steps) {
    for (const TraceRecord& record : step.records) most = std::max(most, static_cast<int64_t>(record.experts.size()));
  }
  return most;
}

LoadTimeModel MeasuredLoadModel(const TraceIoFigures& io, int queue_depth) {
  LoadTimeModel model;
  model.expert_bytes = io.expert_bytes;
  if (queue_depth > 0) model.queue_depth = queue_depth;
  if (io.read_bytes_per_second > 0) {
    // The run's throughput is bytes over the time reads were in flight, with
    // reads overlapping: their latency is inside it already. Taken as the
    // shared bandwidth, with what the mean load time leaves beyond the mean
    // number of overlapping transfers (Little's law: throughput x load time
    // / bytes) as latency, which is ~0: checked against the engine
    // (tests/runtime/sim_vs_engine_test.cc), this gave the stall per token
    // closest to the engine's (2048 vs ~2400 us at 25% of the bundled model;
    // a fixed latency of the mean load time gave 2607).
    model.bytes_per_second = io.read_bytes_per_second;
    model.latency_us = 0;
    if (io.load_us > 0 && io.expert_bytes > 0) {
      const double transfer_us = static_cast<double>(io.expert_bytes) / model.bytes_per_second * 1e6;
      const double overlapping = std::max(1.0, io.load_us / transfer_us);
      model.latency_us = std::max(0.0, io.load_us - overlapping * transfer_us);
    }
  } else if (io.load_us > 0 && io.expert_bytes > 0) {
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
  const int64_t widest = MaxExpertsPerRow(trace);
  if (options.capacity_slots < widest) {
    return absl::InvalidArgumentError(absl::StrCat("replay: capacity ", options.capacity_slots,
                                                   " experts is fewer than the ", widest,
                                                   " one row routes to at one layer"));
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
