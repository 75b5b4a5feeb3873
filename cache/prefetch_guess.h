#ifndef EXPERTD_CACHE_PREFETCH_GUESS_H_
#define EXPERTD_CACHE_PREFETCH_GUESS_H_

// Which pass's MoE layer a prefetch was for, and whether that layer has run
// without asking for it (the guess was wrong). Shared by the cache's tiers
// (SlotTier) and the engine replay, so both judge a guess alike.

#include <cstdint>

namespace expertd::cache {

struct PrefetchGuess {
  uint64_t pass = 0;
  int layer = 0;

  // A prefetch of an expert of `expert_layer`, made while (pass, layer)
  // runs (layer -1: before the pass's first MoE layer): for this pass when
  // its layer lies ahead, else for the next pass (the next token's first
  // layers).
  static PrefetchGuess Made(int expert_layer, uint64_t pass, int layer) {
    return {expert_layer > layer ? pass : pass + 1, expert_layer};
  }
  // Whether its layer has run by (pass, layer): a layer still running may
  // yet ask for it.
  bool LayerRan(uint64_t now_pass, int now_layer) const {
    return pass < now_pass || (pass == now_pass && layer < now_layer);
  }
};

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_PREFETCH_GUESS_H_
