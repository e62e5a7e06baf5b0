// Multi-head self-attention with optional rotary position embedding (RoPE), causal or
// bidirectional (conventions: see linear.h).
//
//   q = rope(x @ wq^T), k = rope(x @ wk^T), v = x @ wv^T     split into H heads of size D
//   att = softmax(q k^T / sqrt(D) + mask)                    mask: -inf above the diagonal
//   out = merge_heads(att @ v) @ wo^T                        when causal
//
// RoPE rotates pairs (i, i + D/2) of each head (the "rotate half" form of Llama and GPT-NeoX)
// by angle pos * theta^(-2i/D).
#pragma once

#include <cstdint>

namespace moe::nn {

struct AttentionConfig {
    int64_t n_heads = 1;
    int64_t head_dim = 0;  // C = n_heads * head_dim
    bool causal = true;
    bool rope = true;
    double rope_theta = 10000.0;
};

// Buffers forward fills and backward reads. Sizes in elements:
//   q, k, v: [B, H, T, D] (q and k after RoPE);  att: [B, H, T, T] (probabilities);
//   y: [B, T, C] (heads merged, before the output projection).
template <class R>
struct AttentionSaved {
    R* q;
    R* k;
    R* v;
    R* att;
    R* y;
};

// out, x: [B, T, C]; wq, wk, wv, wo: [C, C].
template <class R>
void attention_forward(R* out, const AttentionSaved<R>& saved, const R* x, const R* wq,
                       const R* wk, const R* wv, const R* wo, int64_t B, int64_t T,
                       const AttentionConfig& cfg);

// Elements of scratch attention_backward needs.
int64_t attention_scratch_size(int64_t B, int64_t T, const AttentionConfig& cfg);

// Accumulates into d_x[B, T, C] and d_wq, d_wk, d_wv, d_wo [C, C]. scratch is overwritten.
template <class R>
void attention_backward(R* d_x, R* d_wq, R* d_wk, R* d_wv, R* d_wo, R* scratch, const R* d_out,
                        const AttentionSaved<R>& saved, const R* x, const R* wq, const R* wk,
                        const R* wv, const R* wo, int64_t B, int64_t T,
                        const AttentionConfig& cfg);

}  // namespace moe::nn
