#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd::kernels {
namespace {

// Score work per (query, head) pair is about history * head_dim multiply-adds;
// a chunk should hold at least this many so handing it to a worker pays off.
constexpr int64_t kMinChunkMacs = 32 * 1024;

// One (query, head) pair: softmax(q . k_j * scale) weighted sum of v_j over
// j in [0, position]. Key and value j come from the cache rows, except that
// the last one (j == position) comes from own_k/own_v when they are given.
// The order of operations depends only on the pair, so the result is the
// same whichever thread runs it.
// With window > 0 only j in (position - window, position] count; with a
// sink, its logit joins the softmax as one more column (scores needs room).
void AttendOne(const float* q_head, int64_t position, const float* k_head0, const float* v_head0,
               int64_t kv_stride, const float* own_k_head, const float* own_v_head, int head_dim, float scale,
               int64_t window, const float* sink, float* scores, float* out_head) {
  const int64_t first = window > 0 ? std::max<int64_t>(0, position - window + 1) : 0;
  const int64_t history = position + 1 - first;
  auto key = [&](int64_t j) {
    return own_k_head != nullptr && j == position ? own_k_head : k_head0 + j * kv_stride;
  };
  auto value = [&](int64_t j) {
    return own_v_head != nullptr && j == position ? own_v_head : v_head0 + j * kv_stride;
  };
  for (int64_t j = 0; j < history; ++j) {
    scores[j] = Dot(q_head, key(first + j), head_dim) * scale;
  }
  if (sink != nullptr) scores[history] = *sink;
  Softmax(scores, history + (sink != nullptr ? 1 : 0));
  std::fill(out_head, out_head + head_dim, 0.0f);
  for (int64_t j = 0; j < history; ++j) {
    Axpy(scores[j], value(first + j), head_dim, out_head);
  }
}

struct AttentionJob {
  // Runs (query, head) pairs [begin, end); pair = query * num_heads + head.
  void Run(int64_t begin, int64_t end) const {
    // Pool threads live as long as the engine, so a thread_local buffer grows
    // to the longest context once and is then reused: no allocation per
    // token. Its contents never outlive one AttendOne call, so reuse cannot
    // carry state from one pair to another.
    thread_local std::vector<float> scores;
    if (scores.size() < static_cast<size_t>(max_history) + 1) {  // + 1: the sink's column
      scores.resize(static_cast<size_t>(max_history) + 1);
    }
    const int head_dim = shape.head_dim;
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t t = pair / shape.num_heads;
      const int64_t h = pair % shape.num_heads;
      const int64_t kv_head = h / group;
      AttendOne(q + t * q_stride + h * head_dim, first_position + t, k + kv_head * head_dim,
                v + kv_head * head_dim, kv_stride,
                own_k != nullptr ? own_k + kv_head * head_dim : nullptr,
                own_v != nullptr ? own_v + kv_head * head_dim : nullptr, head_dim, scale, shape.window,
                shape.sinks != nullptr ? shape.sinks + h : nullptr, scores.data(), out + t * q_stride + h * head_dim);
    }
  }

  AttentionShape shape;
  const float* q = nullptr;
  int64_t first_position = 0;
  const float* k = nullptr;
  const float* v = nullptr;
  // The last key/value of a single query, when not in the cache.
  const float* own_k = nullptr;
  const float* own_v = nullptr;
  float* out = nullptr;
  int64_t q_stride = 0;   // floats between query rows (q and out)
  int64_t kv_stride = 0;  // floats between cache positions (k and v)
  int group = 1;          // query heads per kv head
  float scale = 1.0f;
  int64_t max_history = 0;
};

}  // namespace

namespace {

void RunAttention(const AttentionShape& shape, const float* q, int num_queries, int first_position, const float* k,
                  const float* v, const float* own_k, const float* own_v, float* out, ThreadPool* pool) {
  if (num_queries <= 0 || shape.num_heads <= 0 || shape.head_dim <= 0 ||
      shape.num_kv_heads <= 0 || shape.num_heads % shape.num_kv_heads != 0) {
    return;  // violates the documented shape contract; nothing sensible to compute
  }
  AttentionJob job;
  job.shape = shape;
  job.q = q;
  job.first_position = first_position;
  job.k = k;
  job.v = v;
  job.own_k = own_k;
  job.own_v = own_v;
  job.out = out;
  job.q_stride = static_cast<int64_t>(shape.num_heads) * shape.head_dim;
  job.kv_stride = static_cast<int64_t>(shape.num_kv_heads) * shape.head_dim;
  job.group = shape.num_heads / shape.num_kv_heads;
  job.scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
  job.max_history = static_cast<int64_t>(first_position) + num_queries;

  const int64_t pairs = static_cast<int64_t>(num_queries) * shape.num_heads;
  if (pool == nullptr) {
    job.Run(0, pairs);
    return;
  }
  const int64_t attended = shape.window > 0 ? std::min<int64_t>(shape.window, int64_t{first_position} + 1)
                                            : int64_t{first_position} + 1;
  const int64_t macs_per_pair = std::max<int64_t>(1, attended * shape.head_dim);
  // One captured pointer keeps std::function from allocating per call.
  pool->ParallelFor(pairs, std::max<int64_t>(1, kMinChunkMacs / macs_per_pair),
                    [job = &job](int64_t begin, int64_t end) { job->Run(begin, end); });
}

}  // namespace

void CausalAttention(const AttentionShape& shape, const float* q, int num_queries,
                     int first_position, const float* k, const float* v, float* out,
                     ThreadPool* pool) {
  RunAttention(shape, q, num_queries, first_position, k, v, nullptr, nullptr, out, pool);
}

void AttentionWithOwnKey(const AttentionShape& shape, const float* q, int position, const float* k, const float* v,
                         const float* own_k, const float* own_v, float* out, ThreadPool* pool) {
  RunAttention(shape, q, 1, position, k, v, own_k, own_v, out, pool);
}

}  // namespace expertd::kernels
