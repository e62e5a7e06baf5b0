// Row-wise softmax and its backward.
//
// Conventions shared by every kernel header in src/kernels/:
// - The float overload is the optimised path; the double overload runs the reference (for
//   finite-difference checks); *_reference templates are the plain loops tests compare to.
// - Backward functions ACCUMULATE into their gradient outputs (+=): a value used twice
//   (a residual stream) gets both contributions without a temporary. Callers zero first.
// - Outputs may alias inputs only where a comment says so.
#pragma once

#include <cstdint>

namespace moe::kernels {

// y[r, :] = softmax(x[r, :]) for r in [0, rows), over C columns. y may alias x.
// Subtracts the row max first, so large logits do not overflow.
void softmax_forward(float* y, const float* x, int64_t rows, int64_t C);
void softmax_forward(double* y, const double* x, int64_t rows, int64_t C);
// dx[r, :] += y * (dy - sum_j dy_j * y_j), from the forward output y[rows, C].
void softmax_backward(float* dx, const float* dy, const float* y, int64_t rows, int64_t C);
void softmax_backward(double* dx, const double* dy, const double* y, int64_t rows, int64_t C);

template <class R>
void softmax_forward_reference(R* y, const R* x, int64_t rows, int64_t C);
template <class R>
void softmax_backward_reference(R* dx, const R* dy, const R* y, int64_t rows, int64_t C);

}  // namespace moe::kernels
