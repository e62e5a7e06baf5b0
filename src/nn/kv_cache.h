// Incremental (KV-cache) decoding for causal self-attention (conventions: see linear.h; the
// layer itself: see attention.h).
//
// A causal layer's output at position t depends only on the tokens at 0..t, and the keys and
// values of those tokens do not change when later tokens arrive. So generation keeps, per
// layer and sequence, the k (after RoPE) and v of every position so far, and each new token
// only computes its own q, k, v and attends over the cached rows:
//
//   q, k, v = rope(x wq^T), rope(x wk^T), x wv^T      at position pos = cache.length
//   cache.k[:, pos], cache.v[:, pos] = k, v
//   out = merge_heads(softmax(q k_cache[0..pos]^T / sqrt(D)) v_cache[0..pos]) wo^T
//
// Cost of one step with L = pos + 1 positions in context, in multiply-adds: 4 C^2 for the
// four projections plus 2 L C for the scores and the weighted sum of values, i.e. O(C^2 + L C),
// linear in L. Rerunning attention_forward on the whole prefix instead costs
// O(L C^2 + L^2 C) per token, so generating N tokens drops from O(N^2 C^2 + N^3 C) to
// O(N C^2 + N^2 C). The attention term overtakes the projections at L = 2 C (768 at C = 384).
// Measured on one core (C = 384, H = 6, max_len = 1024, CPU time): 64 us a step over
// positions 0..255, then +17 us for each further 256 positions (115 us over 768..1023).
// Memory: the cache holds 2 * H * max_len * D = 2 * max_len * C elements per layer, set up
// once; a step allocates nothing (its buffers are the caller's scratch).
#pragma once

#include <cstdint>
#include <string>

#include "core/arena.h"
#include "nn/attention.h"

namespace moe::nn {

// The keys and values of one causal attention layer for one sequence (batch 1). Views of
// caller-owned memory (a std::vector, an Arena): the cache never allocates or frees.
// Row (h, t) of k and v holds head h of position t; rows [0, length) are filled.
template <class R>
struct KvCache {
    R* k = nullptr;  // [H, max_len, D], after RoPE
    R* v = nullptr;  // [H, max_len, D]
    int64_t n_heads = 0;
    int64_t max_len = 0;
    int64_t head_dim = 0;
    int64_t length = 0;  // positions filled, and the position of the next token

    // Forgets the sequence (a new one starts at position 0); the memory is kept.
    void reset() { length = 0; }
};

// Elements of each of k and v: H * max_len * D.
int64_t kv_cache_size(int64_t max_len, const AttentionConfig& cfg);

// An empty cache on k, v (kv_cache_size(max_len, cfg) elements each) for layers of cfg.
template <class R>
KvCache<R> make_kv_cache(R* k, R* v, int64_t max_len, const AttentionConfig& cfg);

// Declares "<prefix>.k" and "<prefix>.v", f32 [H, max_len, D], in an arena before allocate(),
// so the caches of every layer come from one block.
void declare_kv_cache(Arena& arena, const std::string& prefix, int64_t max_len,
                      const AttentionConfig& cfg);
// An empty cache on the allocated arena's "<prefix>.k" and "<prefix>.v".
KvCache<float> kv_cache_in(const Arena& arena, const std::string& prefix);

// Elements of scratch attention_decode_forward needs for a cache of max_len positions.
int64_t attention_decode_scratch_size(int64_t max_len, const AttentionConfig& cfg);

// One decoding step: the token with normed input x at position pos = cache.length.
//   out, x: [C] (out may alias x: x is read only before out is written); wq, wk, wv, wo: [C, C];
//   scratch: attention_decode_scratch_size(cache.max_len, cfg) elements, overwritten.
// Appends the token's k and v to the cache and advances cache.length. cfg must be causal.
// Errors when the cache is full (length == max_len) or does not match cfg.
template <class R>
void attention_decode_forward(R* out, const R* x, const R* wq, const R* wk, const R* wv,
                              const R* wo, KvCache<R>& cache, const AttentionConfig& cfg,
                              R* scratch);

// Runs a prompt of T tokens through attention_forward (B = 1) and fills the empty cache with
// its k and v, so decoding continues at position T. Arguments as attention_forward's with
// B = 1: out, x: [T, C]; saved: attention_forward's buffers for B = 1, T (filled here, so the
// prompt's forward can also be differentiated). Errors unless cache.length == 0 and
// T <= cache.max_len.
template <class R>
void attention_prefill(R* out, const AttentionSaved<R>& saved, const R* x, const R* wq, const R* wk,
                       const R* wv, const R* wo, int64_t T, KvCache<R>& cache,
                       const AttentionConfig& cfg);

}  // namespace moe::nn
