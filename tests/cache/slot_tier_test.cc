// One tier's books on their own, without files or threads: slots handed out
// and taken back, victims chosen through the policy but never loading or
// pinned, failed fills freed, and each demand access counted once.

#include "cache/slot_tier.h"

#include <memory>

#include "gtest/gtest.h"

namespace expertd::cache {
namespace {

std::unique_ptr<SlotTier> MakeTier(int slots, bool wrong_guesses_first = true) {
  PolicyOptions options;
  options.num_layers = 4;
  options.num_experts = 8;
  auto policy = MakeEvictionPolicy("lru", options);
  EXPECT_TRUE(policy.ok()) << policy.status();
  auto tier = std::make_unique<SlotTier>("test", std::move(*policy), wrong_guesses_first);
  for (int i = 0; i < slots; ++i) tier->AddSlot(std::make_unique<Slot>());
  return tier;
}

// Fills `key` into a slot from TakeSlot and finishes the fill (as a
// prefetch's: ready and unclaimed).
Slot* Fill(SlotTier& tier, const ExpertKey& key, uint64_t pass = 0, bool prefetch = false) {
  Slot* slot = tier.TakeSlot(pass);
  if (slot == nullptr) return nullptr;
  tier.BeginFill(slot, key, prefetch);
  tier.FinishFill(slot, absl::OkStatus());
  return slot;
}

TEST(SlotTierTest, FreeSlotsFirstThenThePolicysVictim) {
  auto tier = MakeTier(2);
  EXPECT_EQ(tier->stats().slots, 2);
  EXPECT_EQ(tier->stats().policy, "lru");
  Slot* a = Fill(*tier, {0, 0});
  Slot* b = Fill(*tier, {0, 1});
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  EXPECT_EQ(tier->stats().evictions, 0u);
  tier->policy().OnAccess({0, 0});
  tier->policy().OnHit({0, 0});  // {0,1} is now the least recent
  Slot* c = Fill(*tier, {0, 2});
  EXPECT_EQ(c, b) << "LRU's victim's slot is reused";
  EXPECT_EQ(tier->stats().evictions, 1u);
  EXPECT_FALSE(tier->Holds({0, 1}));
  EXPECT_EQ(tier->FindReady({0, 0}), a);
  EXPECT_TRUE(tier->CheckInvariants().ok()) << tier->CheckInvariants();
}

// A prefetch for layer 2 made at layer 1 is a wrong guess once layer 2 has
// run without asking for it; until then, or once claimed, it is the
// policy's to judge. LRU alone would evict the older demand-loaded expert.
TEST(SlotTierTest, AWrongGuessIsRecycledBeforeThePolicysVictim) {
  for (bool first : {true, false}) {
    SCOPED_TRACE(first ? "wrong guesses first" : "the policy alone");
    auto tier = MakeTier(2, first);
    tier->BeginPass(1);
    tier->BeginLayer(1);
    Slot* used = Fill(*tier, {1, 0}, 1);
    Slot* guess = Fill(*tier, {2, 5}, 1, /*prefetch=*/true);
    ASSERT_NE(guess, nullptr);
    tier->BeginLayer(2);
    // Layer 2 is running: it may still ask for {2,5}; LRU's victim goes.
    Slot* taken = tier->TakeSlot(1);
    EXPECT_EQ(taken, used);
    tier->BeginFill(taken, {2, 1}, /*prefetch=*/false);
    tier->FinishFill(taken, absl::OkStatus());
    tier->BeginLayer(3);  // layer 2 ran without {2,5}
    // Make {2,5} LRU's most recent, so the policy alone would evict {2,1}
    // (the policy hears of a use; the tier still sees the prefetch unclaimed).
    tier->policy().OnAccess({2, 5});
    tier->policy().OnHit({2, 5});
    taken = tier->TakeSlot(1);
    EXPECT_EQ(taken, first ? guess : used);
    EXPECT_EQ(tier->stats().wrong_guesses_recycled, first ? 1u : 0u);
    EXPECT_EQ(tier->stats().evictions, 2u);
    tier->ReturnSlot(taken);
    EXPECT_TRUE(tier->CheckInvariants().ok()) << tier->CheckInvariants();
  }
}

TEST(SlotTierTest, AClaimedOrNextTokenPrefetchIsNoWrongGuess) {
  auto tier = MakeTier(3);
  tier->BeginPass(1);
  tier->BeginLayer(3);
  // Made at the last layer for layer 0: the next pass's guess.
  Slot* next_token = Fill(*tier, {0, 2}, 1, /*prefetch=*/true);
  Slot* claimed = Fill(*tier, {3, 4}, 1, /*prefetch=*/true);  // for the running layer
  tier->CountReady(claimed);                     // and used by it
  Slot* demand = Fill(*tier, {3, 6}, 1);
  tier->BeginPass(2);
  tier->BeginLayer(0);
  // LRU order, oldest first: {3,4}, {3,6}, {0,2} (touched below). Layer 0
  // of pass 2 has not run yet and {3,4} was claimed: nothing is a wrong
  // guess, so LRU's victim goes.
  tier->policy().OnAccess({0, 2});
  tier->policy().OnHit({0, 2});
  Slot* taken = tier->TakeSlot(2);
  EXPECT_EQ(taken, claimed);
  EXPECT_EQ(tier->stats().wrong_guesses_recycled, 0u);
  tier->BeginFill(taken, {0, 7}, /*prefetch=*/false);
  tier->FinishFill(taken, absl::OkStatus());
  tier->BeginLayer(1);  // layer 0 of pass 2 ran without {0,2}
  taken = tier->TakeSlot(2);
  EXPECT_EQ(taken, next_token) << "{3,6} is LRU's victim, but {0,2} was a wrong guess";
  EXPECT_NE(taken, demand);
  EXPECT_EQ(tier->stats().wrong_guesses_recycled, 1u);
  tier->ReturnSlot(taken);
  EXPECT_TRUE(tier->CheckInvariants().ok()) << tier->CheckInvariants();
}

// A shrink destroys a slot a guess once held; the guess list, pruned only
// when it is searched, must not keep it (ASan sees a use after free if it
// does).
TEST(SlotTierTest, ADestroyedSlotLeavesTheGuesses) {
  auto tier = MakeTier(2);
  tier->BeginPass(1);
  tier->BeginLayer(0);
  Fill(*tier, {0, 1}, 1);
  Slot* guess = Fill(*tier, {1, 2}, 1, /*prefetch=*/true);
  tier->BeginLayer(2);
  Slot* taken = tier->TakeSlot(1);  // the wrong guess
  ASSERT_EQ(taken, guess);
  tier->DestroySlot(taken);
  EXPECT_EQ(tier->slot_count(), 1);
  Slot* again = Fill(*tier, {3, 3}, 1, /*prefetch=*/true);  // evicts {0,1}: nothing is a wrong guess yet
  ASSERT_NE(again, nullptr);
  tier->BeginPass(2);  // layer 3 of pass 1 ran without {3,3}
  tier->BeginLayer(0);
  EXPECT_EQ(tier->TakeSlot(1), again);
  EXPECT_EQ(tier->stats().wrong_guesses_recycled, 2u);
  tier->ReturnSlot(again);
  EXPECT_TRUE(tier->CheckInvariants().ok()) << tier->CheckInvariants();
}

TEST(SlotTierTest, LoadingAndPinnedSlotsAreNeverVictims) {
  auto tier = MakeTier(2);
  Slot* pinned = Fill(*tier, {0, 0});
  tier->Pin(pinned);
  Slot* loading = tier->TakeSlot(0);
  tier->BeginFill(loading, {0, 1}, /*prefetch=*/true);
  EXPECT_EQ(tier->Find({0, 1}), loading);
  EXPECT_EQ(tier->FindReady({0, 1}), nullptr) << "still loading";
  EXPECT_EQ(tier->TakeSlot(0), nullptr) << "every slot is pinned or loading";
  EXPECT_TRUE(tier->CheckInvariants().ok());
  tier->Unpin(pinned);
  EXPECT_EQ(tier->TakeSlot(0), pinned) << "unpinned, it can go";
  tier->ReturnSlot(pinned);
  EXPECT_TRUE(tier->CheckInvariants().ok()) << tier->CheckInvariants();
  EXPECT_EQ(tier->stats().loads, 2u);
  EXPECT_EQ(tier->stats().prefetches, 1u);
}

TEST(SlotTierTest, AFailedFillFreesItsSlotAndForgetsTheKey) {
  auto tier = MakeTier(1);
  Slot* slot = tier->TakeSlot(0);
  tier->BeginFill(slot, {1, 3}, /*prefetch=*/false);
  std::shared_ptr<SlotLoad> load = slot->load;
  tier->FinishFill(slot, absl::DataLossError("bad bytes"));
  EXPECT_TRUE(load->done);
  EXPECT_EQ(load->status.code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(tier->Holds({1, 3}));
  EXPECT_EQ(tier->stats().load_errors, 1u);
  EXPECT_EQ(tier->stats().completed_loads, 1u);
  EXPECT_EQ(tier->TakeSlot(0), slot) << "back on the free list";
  tier->ReturnSlot(slot);
  EXPECT_TRUE(tier->CheckInvariants().ok()) << tier->CheckInvariants();
}

TEST(SlotTierTest, EachAccessIsCountedOnceAsHitHiddenOrMiss) {
  auto tier = MakeTier(1);
  Slot* slot = tier->TakeSlot(/*pass=*/1);
  tier->BeginFill(slot, {0, 5}, /*prefetch=*/true);
  tier->CountMiss({0, 5}, 1);  // joins the prefetch still loading
  EXPECT_EQ(tier->stats().misses, 1u);
  EXPECT_EQ(tier->stats().shared_loads, 1u);
  EXPECT_EQ(tier->stats().late_prefetches, 1u);
  tier->FinishFill(slot, absl::OkStatus());
  tier->CountReady(slot);
  EXPECT_EQ(tier->stats().hits, 1u) << "the late prefetch was claimed by the miss";
  EXPECT_EQ(tier->stats().hidden, 0u);

  // Evicted in pass 2, missed in pass 2: a collision miss; in pass 3 not.
  Slot* other = Fill(*tier, {0, 6}, /*pass=*/2);
  EXPECT_EQ(other, slot);
  tier->CountMiss({0, 5}, 2);
  EXPECT_EQ(tier->stats().collision_misses, 1u);
  tier->CountMiss({0, 5}, 3);
  EXPECT_EQ(tier->stats().collision_misses, 1u);
  EXPECT_EQ(tier->stats().accesses(), 4u);
}

TEST(SlotTierTest, TheAskedListLastsOneLayer) {
  auto tier = MakeTier(1);
  tier->NoteAsked({0, 1});
  tier->NoteAsked({0, 2});
  EXPECT_TRUE(tier->WasAsked({0, 1}));
  EXPECT_TRUE(tier->TakeAsked({0, 1}));
  EXPECT_FALSE(tier->TakeAsked({0, 1})) << "taken once";
  EXPECT_TRUE(tier->WasAsked({0, 2}));
  tier->BeginLayer(1);
  EXPECT_FALSE(tier->WasAsked({0, 2})) << "cleared at the next layer";
}

TEST(SlotTierTest, DestroyedSlotsLeaveTheCount) {
  auto tier = MakeTier(3);
  Fill(*tier, {0, 0});
  while (tier->slot_count() > 1) tier->DestroySlot(tier->TakeSlot(0));
  EXPECT_EQ(tier->stats().slots, 1);
  EXPECT_TRUE(tier->CheckInvariants().ok()) << tier->CheckInvariants();
}

}  // namespace
}  // namespace expertd::cache
