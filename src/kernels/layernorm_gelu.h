// LayerNorm over the last dimension followed by exact GELU, fused (conventions: see softmax.h).
// The convolutional stem's "LayerNorm over channels -> GELU" of every pixel (src/vision/
// conv_stem.h), in one pass over the activations each way instead of five.
//
//   y   = (in - mean) * rstd * weight + bias      (kernels/norms.h's layernorm_forward)
//   out = gelu(y) = y * Phi(y)                     (kernels/activations.h's gelu_forward)
//
// y itself is not stored: backward recomputes it from `in`, mean and rstd, which it reads
// anyway for LayerNorm's backward. That saves writing and reading one [N, C] array per call.
// in, out, d_in, d_out: [N, C]; weight, bias, d_weight, d_bias: [C]; mean, rstd: [N].
#pragma once

#include <cstdint>

namespace moe::kernels {

// out = gelu(layernorm(in)). Saves mean[N] and rstd[N] (the biased variance, as PyTorch).
void layernorm_gelu_forward(float* out, float* mean, float* rstd, const float* in,
                            const float* weight, const float* bias, int64_t N, int64_t C,
                            float eps);
void layernorm_gelu_forward(double* out, double* mean, double* rstd, const double* in,
                            const double* weight, const double* bias, int64_t N, int64_t C,
                            double eps);

// d_in = dL/d(in), WRITTEN, not accumulated (unlike layernorm_backward): its only caller's
// buffer would otherwise need a zeroing pass. d_in may be d_out itself (in place).
// d_weight[C] and d_bias[C] are accumulated (+=), summed over rows in the canonical order of
// kernels/grouped_reduce.h and, inside that, in fixed row blocks added in order: the same
// bits for any thread count and any scheduling.
void layernorm_gelu_backward(float* d_in, float* d_weight, float* d_bias, const float* d_out,
                             const float* in, const float* weight, const float* bias,
                             const float* mean, const float* rstd, int64_t N, int64_t C);
void layernorm_gelu_backward(double* d_in, double* d_weight, double* d_bias, const double* d_out,
                             const double* in, const double* weight, const double* bias,
                             const double* mean, const double* rstd, int64_t N, int64_t C);

// The unfused composition, plain loops in double: layernorm_forward_reference into a
// temporary, then gelu_forward_reference; backward likewise through the temporary.
template <class R>
void layernorm_gelu_forward_reference(R* out, R* mean, R* rstd, const R* in, const R* weight,
                                      const R* bias, int64_t N, int64_t C, R eps);
template <class R>
void layernorm_gelu_backward_reference(R* d_in, R* d_weight, R* d_bias, const R* d_out, const R* in,
                                       const R* weight, const R* bias, const R* mean, const R* rstd,
                                       int64_t N, int64_t C);

}  // namespace moe::kernels
