// CPU backend of the row-wise softmax: a vectorised float path, the reference loops for double.
#include "kernels/softmax.h"
#include "kernels/cpu/vec_math.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "core/check.h"

namespace moe::kernels {

namespace {

// Below this many elements a parallel region costs more than it saves: softmax over 32k floats
// takes ~17 us on one core here, and a fork/join of the team a few us on idle cores (much more
// when the 2 cores are shared with other work).
constexpr int64_t kParallelMin = 32 * 1024;

void check_sizes(const char* op, int64_t rows, int64_t C) {
    MOE_CHECK(rows >= 0 && C > 0, op, ": bad sizes rows=", rows, " C=", C);
}

void softmax_row(float* y, const float* x, int64_t C) {
    float m = x[0];
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < C; ++j) m = x[j] > m ? x[j] : m;
    double sum = 0.0;  // double: C up to ~1e5 keys, float would drift by ~C * eps
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < C; ++j) {
        const float e = cpu::exp_nonpositive_f32(x[j] - m);
        y[j] = e;  // y may alias x: same index, read before written
        sum += double(e);
    }
    const float inv = float(1.0 / sum);
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) y[j] *= inv;
}

void softmax_backward_row(float* dx, const float* dy, const float* y, int64_t C) {
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < C; ++j) dot += double(dy[j]) * double(y[j]);
    const float d = float(dot);
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) dx[j] += y[j] * (dy[j] - d);
}

}  // namespace

template <class R>
void softmax_forward_reference(R* y, const R* x, int64_t rows, int64_t C) {
    check_sizes("softmax_forward_reference", rows, C);
    for (int64_t r = 0; r < rows; ++r) {
        const R* xr = x + r * C;
        R* yr = y + r * C;
        double m = double(xr[0]);
        for (int64_t j = 1; j < C; ++j) m = std::max(m, double(xr[j]));
        double sum = 0.0;
        for (int64_t j = 0; j < C; ++j) sum += std::exp(double(xr[j]) - m);
        // Recompute exp rather than store it: y may alias x.
        for (int64_t j = 0; j < C; ++j) yr[j] = R(std::exp(double(xr[j]) - m) / sum);
    }
}

template <class R>
void softmax_backward_reference(R* dx, const R* dy, const R* y, int64_t rows, int64_t C) {
    check_sizes("softmax_backward_reference", rows, C);
    for (int64_t r = 0; r < rows; ++r) {
        const R* dyr = dy + r * C;
        const R* yr = y + r * C;
        R* dxr = dx + r * C;
        double dot = 0.0;
        for (int64_t j = 0; j < C; ++j) dot += double(dyr[j]) * double(yr[j]);
        for (int64_t j = 0; j < C; ++j)
            dxr[j] = R(double(dxr[j]) + double(yr[j]) * (double(dyr[j]) - dot));
    }
}

template void softmax_forward_reference<float>(float*, const float*, int64_t, int64_t);
template void softmax_forward_reference<double>(double*, const double*, int64_t, int64_t);
template void softmax_backward_reference<float>(float*, const float*, const float*, int64_t,
                                                int64_t);
template void softmax_backward_reference<double>(double*, const double*, const double*, int64_t,
                                                 int64_t);

// x[rows, C] -> y[rows, C]; one row per iteration, so results do not depend on thread count.
void softmax_forward(float* y, const float* x, int64_t rows, int64_t C) {
    check_sizes("softmax_forward", rows, C);
#pragma omp parallel for schedule(static) if (rows * C > kParallelMin)
    for (int64_t r = 0; r < rows; ++r) softmax_row(y + r * C, x + r * C, C);
}

void softmax_forward(double* y, const double* x, int64_t rows, int64_t C) {
    softmax_forward_reference(y, x, rows, C);
}

// dy[rows, C], y[rows, C] -> dx[rows, C] (accumulated).
void softmax_backward(float* dx, const float* dy, const float* y, int64_t rows, int64_t C) {
    check_sizes("softmax_backward", rows, C);
#pragma omp parallel for schedule(static) if (rows * C > kParallelMin)
    for (int64_t r = 0; r < rows; ++r) softmax_backward_row(dx + r * C, dy + r * C, y + r * C, C);
}

void softmax_backward(double* dx, const double* dy, const double* y, int64_t rows, int64_t C) {
    softmax_backward_reference(dx, dy, y, rows, C);
}

}  // namespace moe::kernels
