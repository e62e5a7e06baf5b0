// LayerNorm over the last dimension followed by exact GELU, fused (conventions: see softmax.h).
// The convolutional stem's "LayerNorm over channels -> GELU" of every pixel (src/vision/
// conv_stem.h), in one pass over the activations each way instead of five.
//
//   y    = (in - mean) * rstd * weight + bias     (kernels/norms.h's layernorm_forward)
//   out  = gelu(y) = y * Phi(y)                    (kernels/activations.h's gelu_forward)
//   grad = gelu'(y) = Phi(y) + y * phi(y)          saved for backward
//
// Forward saves GELU's slope instead of y: it has Phi and phi at hand (the erfc fit and two
// exps, ~2 ns per value on one core), so the slope costs one store, and backward needs no
// transcendental at all (it recomputed them in the unfused kernels). The array is the size
// of the y the unfused pair kept. xhat = (in - mean) * rstd is recomputed from `in`.
// in, out, grad, d_in, d_out: [N, C]; weight, bias, d_weight, d_bias: [C]; mean, rstd: [N].
#pragma once

#include <cstdint>

namespace moe::kernels {

// out = gelu(layernorm(in)), grad = gelu'(layernorm(in)). Saves mean[N] and rstd[N] (the
// biased variance, as PyTorch). out and grad give the bits of layernorm_forward followed by
// gelu_forward and by gelu_backward with d_out = 1 (the same float expressions).
void layernorm_gelu_forward(float* out, float* grad, float* mean, float* rstd, const float* in,
                            const float* weight, const float* bias, int64_t N, int64_t C,
                            float eps);
void layernorm_gelu_forward(double* out, double* grad, double* mean, double* rstd, const double* in,
                            const double* weight, const double* bias, int64_t N, int64_t C,
                            double eps);

// d_in = dL/d(in), WRITTEN, not accumulated (unlike layernorm_backward): its only caller's
// buffer would otherwise need a zeroing pass. d_in may be d_out itself (in place).
// d_weight[C] and d_bias[C] are accumulated (+=), summed over rows in the canonical order of
// kernels/grouped_reduce.h and, inside that, in fixed row blocks added in order: the same
// bits for any thread count and any scheduling.
void layernorm_gelu_backward(float* d_in, float* d_weight, float* d_bias, const float* d_out,
                             const float* grad, const float* in, const float* weight,
                             const float* mean, const float* rstd, int64_t N, int64_t C);
void layernorm_gelu_backward(double* d_in, double* d_weight, double* d_bias, const double* d_out,
                             const double* grad, const double* in, const double* weight,
                             const double* mean, const double* rstd, int64_t N, int64_t C);

// The unfused composition, plain loops: layernorm_forward_reference into a temporary, then
// gelu_forward_reference and gelu_backward_reference (for grad); backward multiplies d_out
// by grad and runs layernorm_backward_reference.
template <class R>
void layernorm_gelu_forward_reference(R* out, R* grad, R* mean, R* rstd, const R* in,
                                      const R* weight, const R* bias, int64_t N, int64_t C, R eps);
template <class R>
void layernorm_gelu_backward_reference(R* d_in, R* d_weight, R* d_bias, const R* d_out,
                                       const R* grad, const R* in, const R* weight, const R* mean,
                                       const R* rstd, int64_t N, int64_t C);

}  // namespace moe::kernels
