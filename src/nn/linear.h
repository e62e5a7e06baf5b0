// Linear layer: out = in @ weight^T + bias, PyTorch's layout (weight is [out, in]).
//
// Layer conventions shared by src/nn/:
// - Each layer is a forward/backward pair of free functions on raw pointers with explicit
//   sizes, templated on the real type R and instantiated for float (training and
//   inference, optimised kernels) and double (finite-difference checks, reference kernels).
// - Forward writes its output and whatever backward needs ("saved" buffers, caller-owned).
// - Backward ACCUMULATES (+=) into every gradient it produces, inputs and parameters.
//   Callers zero gradients once per step. A gradient pointer documented as nullable skips
//   that gradient.
#pragma once

#include <cstdint>

namespace moe::nn {

// out[N, OC] = in[N, C] @ weight[OC, C]^T + bias[OC]. bias may be null.
template <class R>
void linear_forward(R* out, const R* in, const R* weight, const R* bias, int64_t N, int64_t C,
                    int64_t OC);

// d_in[N, C] += d_out @ weight; d_weight[OC, C] += d_out^T @ in; d_bias[OC] += sum_n d_out.
// d_in and d_bias may be null.
template <class R>
void linear_backward(R* d_in, R* d_weight, R* d_bias, const R* d_out, const R* in,
                     const R* weight, int64_t N, int64_t C, int64_t OC);

}  // namespace moe::nn
