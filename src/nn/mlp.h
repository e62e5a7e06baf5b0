// Feed-forward blocks: the dense MLP of a transformer and the body of every expert
// (conventions: see linear.h). No biases in SwiGLU (as in Llama/Mixtral); GELU and ReLU
// have optional biases.
#pragma once

#include <cstdint>

namespace moe::nn {

// SwiGLU: out[N, C] = (silu(in @ w1^T) * (in @ w3^T)) @ w2^T
//   w1, w3: [H, C] (gate and up projections), w2: [C, H] (down projection).
// Saves h1 = in @ w1^T, h3 = in @ w3^T and act = silu(h1) * h3, each [N, H].
template <class R>
void swiglu_mlp_forward(R* out, R* h1, R* h3, R* act, const R* in, const R* w1, const R* w3,
                        const R* w2, int64_t N, int64_t C, int64_t H);

// Accumulates into d_in[N, C] (nullable), d_w1, d_w3 [H, C] and d_w2 [C, H].
// scratch: [3, N, H] elements, overwritten.
template <class R>
void swiglu_mlp_backward(R* d_in, R* d_w1, R* d_w3, R* d_w2, R* scratch, const R* d_out,
                         const R* in, const R* h1, const R* h3, const R* act, const R* w1,
                         const R* w3, const R* w2, int64_t N, int64_t C, int64_t H);

// GELU MLP: out[N, C] = gelu(in @ w1^T + b1) @ w2^T + b2
//   w1: [H, C], b1: [H], w2: [C, H], b2: [C]; biases may be null.
// Saves h = in @ w1^T + b1 and act = gelu(h), each [N, H].
template <class R>
void gelu_mlp_forward(R* out, R* h, R* act, const R* in, const R* w1, const R* b1, const R* w2,
                      const R* b2, int64_t N, int64_t C, int64_t H);

// Accumulates into d_in[N, C] (nullable), d_w1, d_b1 (nullable), d_w2, d_b2 (nullable).
// scratch: [2, N, H] elements, overwritten.
template <class R>
void gelu_mlp_backward(R* d_in, R* d_w1, R* d_b1, R* d_w2, R* d_b2, R* scratch, const R* d_out,
                       const R* in, const R* h, const R* act, const R* w1, const R* w2, int64_t N,
                       int64_t C, int64_t H);

// ReLU MLP: out[N, C] = relu(in @ w1^T + b1) @ w2^T + b2, shaped and saved as the GELU
// MLP (h and act, each [N, H]); biases may be null.
template <class R>
void relu_mlp_forward(R* out, R* h, R* act, const R* in, const R* w1, const R* b1, const R* w2,
                      const R* b2, int64_t N, int64_t C, int64_t H);

// As gelu_mlp_backward. scratch: [2, N, H] elements, overwritten.
template <class R>
void relu_mlp_backward(R* d_in, R* d_w1, R* d_b1, R* d_w2, R* d_b2, R* scratch, const R* d_out,
                       const R* in, const R* h, const R* act, const R* w1, const R* w2, int64_t N,
                       int64_t C, int64_t H);

}  // namespace moe::nn
