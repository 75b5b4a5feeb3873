#ifndef EXPERTD_KERNELS_CPU_ATTENTION_H_
#define EXPERTD_KERNELS_CPU_ATTENTION_H_

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace expertd::kernels {

struct AttentionShape {
  int num_heads = 0;
  int num_kv_heads = 0;  // divides num_heads (grouped-query attention)
  int head_dim = 0;
  // > 0: a query at position p attends only to positions (p - window, p]
  // (a sliding-window layer; the cache may hold more). 0: to all of [0, p].
  int window = 0;
  // When set, [num_heads] learned logits ("attention sinks", gpt-oss): each
  // head's softmax gets one more column with this logit, which takes its
  // share of the probability and is then dropped (it has no value row).
  const float* sinks = nullptr;
};

// Causal attention of `num_queries` consecutive new positions against a KV
// history. Query row t (0-based among the new ones) sits at absolute position
// first_position + t and attends to cached positions [0, first_position + t].
//   q:   [num_queries][num_heads * head_dim]
//   k,v: [>= first_position + num_queries][num_kv_heads * head_dim] (the
//        cache, with the new positions already written)
//   out: [num_queries][num_heads * head_dim]
// Scores are scaled by 1/sqrt(head_dim). pool may be null; work is split
// over (query, head) pairs.
void CausalAttention(const AttentionShape& shape, const float* q, int num_queries,
                     int first_position, const float* k, const float* v, float* out,
                     ThreadPool* pool);

// One query at absolute `position` attending to cached positions
// [0, position) plus its own key and value, which are not in the cache (a
// Roster of Experts sample shares its sequence's history but must not write
// to it). With own_k/own_v equal to what CausalAttention would have read at
// `position`, the result is bit-identical to CausalAttention's.
//   q, out: [num_heads * head_dim]; own_k, own_v: [num_kv_heads * head_dim]
//   k, v: the cache, >= position rows
void AttentionWithOwnKey(const AttentionShape& shape, const float* q, int position, const float* k, const float* v,
                         const float* own_k, const float* own_v, float* out, ThreadPool* pool);

}  // namespace expertd::kernels

#endif  // EXPERTD_KERNELS_CPU_ATTENTION_H_
