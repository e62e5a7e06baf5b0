// Feed-forward blocks, composed from linear layers and the activation kernels.
//
// All the work is in the linear layers (gemm); the activations are one pass over [N, H].
// Backward needs the gradient at each intermediate, so it writes them into the caller's
// scratch and nothing is allocated. The gradient at the activation output is written by
// gemm with beta = 0; the ones at the pre-activations are zeroed first, because the
// activation backward accumulates.
#include "nn/mlp.h"

#include <algorithm>

#include "core/check.h"
#include "kernels/activations.h"
#include "kernels/gemm.h"
#include "nn/linear.h"

namespace moe::nn {

namespace {
void check_sizes(const char* op, int64_t N, int64_t C, int64_t H) {
    MOE_CHECK(N >= 0 && C > 0 && H > 0, op, ": bad sizes N=", N, " C=", C, " H=", H);
}
}  // namespace

template <class R>
void swiglu_mlp_forward(R* out, R* h1, R* h3, R* act, const R* in, const R* w1, const R* w3,
                        const R* w2, int64_t N, int64_t C, int64_t H) {
    // out: [N, C], h1, h3, act: [N, H] (saved), in: [N, C], w1, w3: [H, C], w2: [C, H]
    check_sizes("swiglu_mlp_forward", N, C, H);
    linear_forward(h1, in, w1, static_cast<const R*>(nullptr), N, C, H);
    linear_forward(h3, in, w3, static_cast<const R*>(nullptr), N, C, H);
    kernels::swiglu_forward(act, h1, h3, N * H);
    linear_forward(out, act, w2, static_cast<const R*>(nullptr), N, H, C);
}

template <class R>
void swiglu_mlp_backward(R* d_in, R* d_w1, R* d_w3, R* d_w2, R* scratch, const R* d_out,
                         const R* in, const R* h1, const R* h3, const R* act, const R* w1,
                         const R* w3, const R* w2, int64_t N, int64_t C, int64_t H) {
    // d_in: [N, C] or null, d_w1, d_w3: [H, C], d_w2: [C, H], scratch: [3, N, H],
    // d_out, in: [N, C], h1, h3, act: [N, H] (from the forward), w1, w3: [H, C], w2: [C, H]
    check_sizes("swiglu_mlp_backward", N, C, H);
    const int64_t NH = N * H;
    R* d_act = scratch;
    R* d_h1 = scratch + NH;
    R* d_h3 = scratch + 2 * NH;
    // d_act[N, H] = d_out @ w2, written by gemm with beta = 0 (no zeroing pass needed);
    // d_h1 and d_h3 are accumulated into by swiglu_backward, so they start at zero.
    kernels::gemm(false, false, N, H, C, R(1), d_out, C, w2, H, R(0), d_act, H);
    linear_backward(static_cast<R*>(nullptr), d_w2, static_cast<R*>(nullptr), d_out, act, w2, N, H,
                    C);
    std::fill(d_h1, d_h1 + 2 * NH, R(0));
    kernels::swiglu_backward(d_h1, d_h3, d_act, h1, h3, NH);
    // Both projections read `in`, so d_in gets both contributions (linear_backward adds).
    linear_backward(d_in, d_w1, static_cast<R*>(nullptr), d_h1, in, w1, N, C, H);
    linear_backward(d_in, d_w3, static_cast<R*>(nullptr), d_h3, in, w3, N, C, H);
}

// The two-matrix MLPs (GELU, ReLU) differ only in their activation kernels.
namespace {
template <class R>
using ActivationForward = void (*)(R* out, const R* x, int64_t n);
template <class R>
using ActivationBackward = void (*)(R* d_x, const R* d_out, const R* x, int64_t n);

template <class R>
void two_matrix_mlp_forward(const char* op, ActivationForward<R> activation, R* out, R* h, R* act,
                            const R* in, const R* w1, const R* b1, const R* w2, const R* b2,
                            int64_t N, int64_t C, int64_t H) {
    // out: [N, C], h, act: [N, H] (saved), in: [N, C], w1: [H, C], b1: [H] or null,
    // w2: [C, H], b2: [C] or null
    check_sizes(op, N, C, H);
    linear_forward(h, in, w1, b1, N, C, H);
    activation(act, h, N * H);
    linear_forward(out, act, w2, b2, N, H, C);
}

template <class R>
void two_matrix_mlp_backward(const char* op, ActivationBackward<R> activation_backward, R* d_in,
                             R* d_w1, R* d_b1, R* d_w2, R* d_b2, R* scratch, const R* d_out,
                             const R* in, const R* h, const R* act, const R* w1, const R* w2,
                             int64_t N, int64_t C, int64_t H) {
    // d_in: [N, C] or null, d_w1: [H, C], d_b1: [H] or null, d_w2: [C, H], d_b2: [C] or
    // null, scratch: [2, N, H], d_out, in: [N, C], h, act: [N, H], w1: [H, C], w2: [C, H]
    check_sizes(op, N, C, H);
    const int64_t NH = N * H;
    R* d_act = scratch;
    R* d_h = scratch + NH;
    kernels::gemm(false, false, N, H, C, R(1), d_out, C, w2, H, R(0), d_act, H);
    linear_backward(static_cast<R*>(nullptr), d_w2, d_b2, d_out, act, w2, N, H, C);
    std::fill(d_h, d_h + NH, R(0));
    activation_backward(d_h, d_act, h, NH);
    linear_backward(d_in, d_w1, d_b1, d_h, in, w1, N, C, H);
}
}  // namespace

template <class R>
void gelu_mlp_forward(R* out, R* h, R* act, const R* in, const R* w1, const R* b1, const R* w2,
                      const R* b2, int64_t N, int64_t C, int64_t H) {
    two_matrix_mlp_forward<R>("gelu_mlp_forward", kernels::gelu_forward, out, h, act, in, w1, b1,
                              w2, b2, N, C, H);
}

template <class R>
void gelu_mlp_backward(R* d_in, R* d_w1, R* d_b1, R* d_w2, R* d_b2, R* scratch, const R* d_out,
                       const R* in, const R* h, const R* act, const R* w1, const R* w2, int64_t N,
                       int64_t C, int64_t H) {
    two_matrix_mlp_backward<R>("gelu_mlp_backward", kernels::gelu_backward, d_in, d_w1, d_b1, d_w2,
                               d_b2, scratch, d_out, in, h, act, w1, w2, N, C, H);
}

template <class R>
void relu_mlp_forward(R* out, R* h, R* act, const R* in, const R* w1, const R* b1, const R* w2,
                      const R* b2, int64_t N, int64_t C, int64_t H) {
    two_matrix_mlp_forward<R>("relu_mlp_forward", kernels::relu_forward, out, h, act, in, w1, b1,
                              w2, b2, N, C, H);
}

template <class R>
void relu_mlp_backward(R* d_in, R* d_w1, R* d_b1, R* d_w2, R* d_b2, R* scratch, const R* d_out,
                       const R* in, const R* h, const R* act, const R* w1, const R* w2, int64_t N,
                       int64_t C, int64_t H) {
    two_matrix_mlp_backward<R>("relu_mlp_backward", kernels::relu_backward, d_in, d_w1, d_b1, d_w2,
                               d_b2, scratch, d_out, in, h, act, w1, w2, N, C, H);
}

#define MOE_INSTANTIATE(R)                                                                       \
    template void swiglu_mlp_forward<R>(R*, R*, R*, R*, const R*, const R*, const R*, const R*,  \
                                        int64_t, int64_t, int64_t);                              \
    template void swiglu_mlp_backward<R>(R*, R*, R*, R*, R*, const R*, const R*, const R*,       \
                                         const R*, const R*, const R*, const R*, const R*,       \
                                         int64_t, int64_t, int64_t);                             \
    template void gelu_mlp_forward<R>(R*, R*, R*, const R*, const R*, const R*, const R*,        \
                                      const R*, int64_t, int64_t, int64_t);                      \
    template void gelu_mlp_backward<R>(R*, R*, R*, R*, R*, R*, const R*, const R*, const R*,     \
                                       const R*, const R*, const R*, int64_t, int64_t, int64_t); \
    template void relu_mlp_forward<R>(R*, R*, R*, const R*, const R*, const R*, const R*,        \
                                      const R*, int64_t, int64_t, int64_t);                      \
    template void relu_mlp_backward<R>(R*, R*, R*, R*, R*, R*, const R*, const R*, const R*,     \
                                       const R*, const R*, const R*, int64_t, int64_t, int64_t);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

}  // namespace moe::nn
