#ifndef EXPERTD_ENGINE_EXPERT_PLAN_H_
#define EXPERTD_ENGINE_EXPERT_PLAN_H_

// Where each expert that a MoE layer's rows chose comes from, decided before
// any of them runs (shared by the CPU and GPU passes):
//   ready    in the compute tier now: pinned, run first;
//   on_cpu   missing from the device compute tier but in DRAM, and cheaper to
//            compute on the CPU for this batch than to copy over PCIe
//            (execution placement, engine/execution_placement.h): the host
//            copy is pinned;
//   pending  everything else: its loads are all started at once (read in
//            parallel), to be Acquired after the ready ones have run, so a
//            slow load holds up only itself.

#include <cstdint>
#include <vector>

#include "engine/execution_placement.h"
#include "engine/expert_source.h"
#include "engine/moe_dispatch.h"

namespace expertd::engine {

class ExpertPlan {
 public:
  struct Pinned {
    int32_t expert = 0;
    ExpertHandle handle;
  };

  // placement null: no execution placement (the compute tier is the host,
  // or it is switched off). expert_bytes: one expert's weights.
  void Plan(int layer, const MoeDispatch& dispatch, ExpertSource& experts,
            const ExecutionPlacement* placement, uint64_t expert_bytes);

  std::vector<Pinned>& ready() { return ready_; }
  std::vector<Pinned>& on_cpu() { return on_cpu_; }
  const std::vector<int32_t>& pending() const { return pending_; }
  // Unpins the ready and on_cpu experts once they have run, so their slots
  // can serve the pending loads; pending stays.
  void ReleasePins();
  void Clear();

 private:
  std::vector<Pinned> ready_;
  std::vector<Pinned> on_cpu_;
  std::vector<int32_t> pending_;
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_EXPERT_PLAN_H_
