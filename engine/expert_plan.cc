#include "engine/expert_plan.h"

namespace expertd::engine {

void ExpertPlan::Plan(int layer, const MoeDispatch& dispatch, ExpertSource& experts,
                      const ExecutionPlacement* placement, uint64_t expert_bytes) {
  Clear();
  // Bytes this layer will copy to the device: each copy waits behind them.
  uint64_t queued_copy_bytes = 0;
  for (int e = 0; e < dispatch.num_experts(); ++e) {
    const int rows = static_cast<int>(dispatch.SlotsOf(e).size());
    if (rows == 0) continue;
    if (std::optional<ExpertHandle> handle = experts.TryAcquire(layer, e)) {
      ready_.push_back({e, std::move(*handle)});
      continue;
    }
    if (placement != nullptr) {
      // Decide on a pure query, then pin: only an expert really computed
      // from DRAM counts as a DRAM access (a copy counts when it is made).
      if (experts.HasHostCopy(layer, e) &&
          placement->Decide(expert_bytes, rows, queued_copy_bytes) == Placement::kComputeOnCpu) {
        if (std::optional<ExpertHandle> host = experts.TryAcquireHostCopy(layer, e)) {
          on_cpu_.push_back({e, std::move(*host)});
          continue;
        }
        // Evicted since the query: load it like any miss.
      }
      queued_copy_bytes += expert_bytes;
    }
    pending_.push_back(e);
  }
  for (int e : pending_) experts.StartLoad(layer, e);
}

void ExpertPlan::ReleasePins() {
  ready_.clear();
  on_cpu_.clear();
}

void ExpertPlan::Clear() {
  ReleasePins();
  pending_.clear();
}

}  // namespace expertd::engine
