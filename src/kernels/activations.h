// Pointwise activations and their backward (conventions: see softmax.h).
#pragma once

#include <cstdint>

namespace moe::kernels {

// SiLU: y = x * sigmoid(x).    dx += dy * sigmoid(x) * (1 + x * (1 - sigmoid(x)))
void silu_forward(float* y, const float* x, int64_t n);
void silu_forward(double* y, const double* x, int64_t n);
void silu_backward(float* dx, const float* dy, const float* x, int64_t n);
void silu_backward(double* dx, const double* dy, const double* x, int64_t n);

// GELU, exact form (PyTorch's default): y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
// dx += dy * (Phi(x) + x * phi(x)).
void gelu_forward(float* y, const float* x, int64_t n);
void gelu_forward(double* y, const double* x, int64_t n);
void gelu_backward(float* dx, const float* dy, const float* x, int64_t n);
void gelu_backward(double* dx, const double* dy, const double* x, int64_t n);

// ReLU: y = max(x, 0).   dx += dy where x > 0 (the subgradient 0 at x = 0, as PyTorch).
// One comparison per element: the same plain loop serves both precisions.
void relu_forward(float* y, const float* x, int64_t n);
void relu_forward(double* y, const double* x, int64_t n);
void relu_backward(float* dx, const float* dy, const float* x, int64_t n);
void relu_backward(double* dx, const double* dy, const double* x, int64_t n);

// SwiGLU gate: y = silu(a) * b.   da += dy * b * silu'(a),  db += dy * silu(a).
void swiglu_forward(float* y, const float* a, const float* b, int64_t n);
void swiglu_forward(double* y, const double* a, const double* b, int64_t n);
void swiglu_backward(float* da, float* db, const float* dy, const float* a, const float* b,
                     int64_t n);
void swiglu_backward(double* da, double* db, const double* dy, const double* a, const double* b,
                     int64_t n);

template <class R> void silu_forward_reference(R* y, const R* x, int64_t n);
template <class R> void silu_backward_reference(R* dx, const R* dy, const R* x, int64_t n);
template <class R> void gelu_forward_reference(R* y, const R* x, int64_t n);
template <class R> void gelu_backward_reference(R* dx, const R* dy, const R* x, int64_t n);
template <class R> void swiglu_forward_reference(R* y, const R* a, const R* b, int64_t n);
template <class R>
void swiglu_backward_reference(R* da, R* db, const R* dy, const R* a, const R* b, int64_t n);

}  // namespace moe::kernels
