// The order in which the readers hand chunks to the device (ReadQueue):
// demand before speculative, the speculative quota, promotion and
// cancellation. The readers' own tests (expert_reader_test.cc) check the
// same rules end to end.

#include <list>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "io/read_request.h"

namespace expertd::io {
namespace {

class ReadQueueTest : public ::testing::Test {
 protected:
  ReadRequest& Add(bool speculative, uint64_t tag = 0, uint64_t length = 4096) {
    return AddReadRequest(requests_, "test.experts", /*direct_io=*/false, /*offset=*/0, length, nullptr,
                          [](absl::Status) {}, ReadClass{.speculative = speculative, .tag = tag});
  }
  // Hands Next's whole request to the device as one chunk, as a reader does.
  ReadRequest* IssueNext(ReadQueue& queue) {
    ReadRequest* next = queue.Next();
    if (next == nullptr) return nullptr;
    next->issued_bytes = next->length;
    ++next->chunks_in_flight;
    queue.Issued(*next, next->read_class.speculative);
    return next;
  }

  std::list<ReadRequest> requests_;
};

TEST_F(ReadQueueTest, DemandRequestsGoBeforeEarlierSpeculativeOnes) {
  ReadQueue queue(/*speculative_depth=*/8);
  ReadRequest& prefetch1 = Add(true);
  ReadRequest& prefetch2 = Add(true);
  ReadRequest& demand = Add(false);
  for (ReadRequest* r : {&prefetch1, &prefetch2, &demand}) queue.Push(*r);
  EXPECT_EQ(IssueNext(queue), &demand);
  EXPECT_EQ(IssueNext(queue), &prefetch1);
  EXPECT_EQ(IssueNext(queue), &prefetch2);
  EXPECT_EQ(queue.Next(), nullptr);
  EXPECT_TRUE(queue.empty());
}

TEST_F(ReadQueueTest, SpeculativeChunksAtTheDeviceAreCappedAndDemandIsNot) {
  ReadQueue queue(/*speculative_depth=*/2);
  ReadRequest* prefetches[3] = {&Add(true), &Add(true), &Add(true)};
  for (ReadRequest* r : prefetches) queue.Push(*r);
  EXPECT_EQ(IssueNext(queue), prefetches[0]);
  EXPECT_EQ(IssueNext(queue), prefetches[1]);
  EXPECT_EQ(queue.speculative_chunks_in_flight(), 2);
  EXPECT_EQ(queue.Next(), nullptr) << "the third prefetch waits for the quota";
  EXPECT_EQ(queue.Any(), prefetches[2]);
  ReadRequest& demand = Add(false);
  queue.Push(demand);
  EXPECT_EQ(IssueNext(queue), &demand) << "demand reads are not held by the quota";
  queue.ChunkDone(/*speculative=*/false);
  EXPECT_EQ(queue.Next(), nullptr);
  queue.ChunkDone(/*speculative=*/true);
  EXPECT_EQ(IssueNext(queue), prefetches[2]);
}

TEST_F(ReadQueueTest, APartlyIssuedRequestStaysQueuedUntilItsLastByteIsOut) {
  ReadQueue queue(/*speculative_depth=*/4);
  ReadRequest& big = Add(false, 0, 3 * 4096);
  queue.Push(big);
  big.issued_bytes = 4096;
  queue.Issued(big, false);
  EXPECT_EQ(queue.Next(), &big);
  big.issued_bytes = 3 * 4096;
  queue.Issued(big, false);
  EXPECT_EQ(queue.Next(), nullptr);
  EXPECT_FALSE(big.in_pending);
}

TEST_F(ReadQueueTest, PromotedRequestsJoinTheDemandQueueInOrderAndEscapeTheQuota) {
  ReadQueue queue(/*speculative_depth=*/1);
  ReadRequest& running = Add(true, 9);
  ReadRequest& other = Add(true, 9);
  ReadRequest& mine1 = Add(true, 5);
  ReadRequest& mine2 = Add(true, 5);
  ReadRequest& demand = Add(false);
  for (ReadRequest* r : {&running, &other, &mine1, &mine2, &demand}) queue.Push(*r);
  EXPECT_EQ(IssueNext(queue), &demand);
  EXPECT_EQ(IssueNext(queue), &running);
  EXPECT_EQ(queue.Next(), nullptr);
  queue.Promote(5);
  queue.Promote(0);  // tags nothing
  EXPECT_FALSE(mine1.read_class.speculative);
  EXPECT_EQ(IssueNext(queue), &mine1);
  EXPECT_EQ(IssueNext(queue), &mine2);
  EXPECT_EQ(queue.Next(), nullptr) << "tag 9 is still speculative and over its quota";
  queue.ChunkDone(true);
  EXPECT_EQ(IssueNext(queue), &other);
}

TEST_F(ReadQueueTest, CancelFailsTheTaggedSpeculativeRequestsOnly) {
  ReadQueue queue(/*speculative_depth=*/4);
  ReadRequest& partly_out = Add(true, 3, 2 * 4096);
  ReadRequest& waiting = Add(true, 3);
  ReadRequest& other_tag = Add(true, 4);
  ReadRequest& demand_same_tag = Add(false, 3);
  for (ReadRequest* r : {&partly_out, &waiting, &other_tag}) queue.Push(*r);
  // One chunk of the first request is at the device.
  partly_out.issued_bytes = 4096;
  ++partly_out.chunks_in_flight;
  queue.Issued(partly_out, true);
  queue.Push(demand_same_tag);

  EXPECT_EQ(queue.Cancel(3, absl::CancelledError("nobody waits")), 2);
  EXPECT_TRUE(partly_out.failed && absl::IsCancelled(partly_out.status));
  EXPECT_FALSE(partly_out.in_pending) << "it completes when its chunk is back";
  EXPECT_TRUE(waiting.failed && absl::IsCancelled(waiting.status));
  EXPECT_FALSE(other_tag.failed);
  EXPECT_FALSE(demand_same_tag.failed) << "a demand read is never cancelled";
  // The cancelled request with nothing out comes first, to be completed.
  EXPECT_EQ(queue.Next(), &waiting);
  queue.Remove(waiting);
  EXPECT_EQ(queue.Next(), &demand_same_tag);
  EXPECT_EQ(queue.Cancel(3, absl::CancelledError("again")), 0);
  EXPECT_EQ(queue.Cancel(0, absl::CancelledError("untagged")), 0);
}

TEST_F(ReadQueueTest, AFailedRequestIsCompletedFirst) {
  ReadQueue queue(/*speculative_depth=*/1);
  ReadRequest& demand = Add(false);
  ReadRequest& misaligned = AddReadRequest(requests_, "test.experts", /*direct_io=*/true, /*offset=*/100, 4096,
                                           nullptr, [](absl::Status) {}, ReadClass{.speculative = true});
  ASSERT_TRUE(misaligned.failed);
  queue.Push(demand);
  queue.Push(misaligned);
  EXPECT_EQ(queue.Next(), &misaligned);
  FailReadRequest(misaligned, queue, absl::InternalError("ignored: the first error stays"));
  EXPECT_TRUE(absl::IsInvalidArgument(misaligned.status)) << misaligned.status;
  EXPECT_EQ(queue.Next(), &demand);
}

}  // namespace
}  // namespace expertd::io
