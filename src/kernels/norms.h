// RMSNorm and LayerNorm over the last dimension (conventions: see softmax.h).
// in, out, d_in, d_out: [N, C]; weight, bias, d_weight, d_bias: [C]; saved stats: [N].
#pragma once

#include <cstdint>

namespace moe::kernels {

// out = in * rstd * weight, rstd = 1 / sqrt(mean(in^2) + eps). Saves rstd[N].
void rmsnorm_forward(float* out, float* rstd, const float* in, const float* weight, int64_t N,
                     int64_t C, float eps);
void rmsnorm_forward(double* out, double* rstd, const double* in, const double* weight,
                     int64_t N, int64_t C, double eps);
// Accumulates into d_in[N, C] and d_weight[C].
void rmsnorm_backward(float* d_in, float* d_weight, const float* d_out, const float* in,
                      const float* weight, const float* rstd, int64_t N, int64_t C);
void rmsnorm_backward(double* d_in, double* d_weight, const double* d_out, const double* in,
                      const double* weight, const double* rstd, int64_t N, int64_t C);

// out = (in - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps) with the biased
// variance (as PyTorch). Saves mean[N] and rstd[N]. bias (and d_bias) may be null: no bias.
void layernorm_forward(float* out, float* mean, float* rstd, const float* in, const float* weight,
                       const float* bias, int64_t N, int64_t C, float eps);
void layernorm_forward(double* out, double* mean, double* rstd, const double* in,
                       const double* weight, const double* bias, int64_t N, int64_t C,
                       double eps);
// Accumulates into d_in[N, C], d_weight[C], d_bias[C].
void layernorm_backward(float* d_in, float* d_weight, float* d_bias, const float* d_out,
                        const float* in, const float* weight, const float* mean,
                        const float* rstd, int64_t N, int64_t C);
void layernorm_backward(double* d_in, double* d_weight, double* d_bias, const double* d_out,
                        const double* in, const double* weight, const double* mean,
                        const double* rstd, int64_t N, int64_t C);

template <class R>
void rmsnorm_forward_reference(R* out, R* rstd, const R* in, const R* weight, int64_t N,
                               int64_t C, R eps);
template <class R>
void rmsnorm_backward_reference(R* d_in, R* d_weight, const R* d_out, const R* in,
                                const R* weight, const R* rstd, int64_t N, int64_t C);
template <class R>
void layernorm_forward_reference(R* out, R* mean, R* rstd, const R* in, const R* weight,
                                 const R* bias, int64_t N, int64_t C, R eps);
template <class R>
void layernorm_backward_reference(R* d_in, R* d_weight, R* d_bias, const R* d_out, const R* in,
                                  const R* weight, const R* mean, const R* rstd, int64_t N,
                                  int64_t C);

}  // namespace moe::kernels
