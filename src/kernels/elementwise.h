// Elementwise arithmetic and reductions on flat arrays (conventions: see softmax.h).
#pragma once

#include <cstdint>

namespace moe::kernels {

// y = a + b (y may alias a or b).
void add(float* y, const float* a, const float* b, int64_t n);
void add(double* y, const double* a, const double* b, int64_t n);
// y += alpha * x.
void axpy(float* y, float alpha, const float* x, int64_t n);
void axpy(double* y, double alpha, const double* x, int64_t n);
// y *= alpha.
void scale(float* y, float alpha, int64_t n);
void scale(double* y, double alpha, int64_t n);
// y = a * b (y may alias a or b).
void mul(float* y, const float* a, const float* b, int64_t n);
void mul(double* y, const double* a, const double* b, int64_t n);

// Reductions accumulate in double, so a sum over a million f32 values keeps ~1e-7 relative
// accuracy, and for a fixed thread count the result is the same run after run.
double sum(const float* x, int64_t n);
double sum(const double* x, int64_t n);
double sum_squares(const float* x, int64_t n);
double sum_squares(const double* x, int64_t n);
float max(const float* x, int64_t n);  // n >= 1
double max(const double* x, int64_t n);
// Index of the largest value of each row of x[rows, C] (first on ties).
void argmax_rows(int32_t* out, const float* x, int64_t rows, int64_t C);

// f32 <-> bf16 for whole arrays (round to nearest even, as moe::f32_to_bf16).
void f32_to_bf16(uint16_t* dst, const float* src, int64_t n);
void bf16_to_f32(float* dst, const uint16_t* src, int64_t n);

template <class R> void add_reference(R* y, const R* a, const R* b, int64_t n);
template <class R> void axpy_reference(R* y, R alpha, const R* x, int64_t n);
template <class R> void scale_reference(R* y, R alpha, int64_t n);
template <class R> void mul_reference(R* y, const R* a, const R* b, int64_t n);
template <class R> double sum_reference(const R* x, int64_t n);
template <class R> double sum_squares_reference(const R* x, int64_t n);
template <class R> R max_reference(const R* x, int64_t n);
void argmax_rows_reference(int32_t* out, const float* x, int64_t rows, int64_t C);
void f32_to_bf16_reference(uint16_t* dst, const float* src, int64_t n);
void bf16_to_f32_reference(float* dst, const uint16_t* src, int64_t n);

}  // namespace moe::kernels
