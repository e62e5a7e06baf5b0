// CPU backend of the row-wise softmax: a vectorised float path, the reference loops for double.
#include "kernels/softmax.h"

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

// exp(x) for x <= 0, written so GCC vectorises it: std::exp does not (without -ffast-math
// glibc's vector expf is not declared). Cephes' expf: x = n*ln2 + r with |r| <= ln2/2, a
// degree-7 polynomial for exp(r), 2^n built from the exponent bits. The error is at most
// 1.02 ulp (checked against double exp over every float in [-87, 0]). Below -87.3, exp(x) is
// under FLT_MIN (1.2e-38): return 0 instead, which also covers x = -inf (masked logits) and
// keeps 2^n inside the normal range.
inline float exp_nonpositive(float x) {
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kLn2Hi = 0.693359375f;  // ln2 split so n * kLn2Hi is exact for |n| < 2^9
    constexpr float kLn2Lo = -2.12194440e-4f;
    constexpr float kMin = -87.3f;
    constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const float xc = x < kMin ? kMin : x;
    const float n = (xc * kLog2e + kRound) - kRound;
    const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const float two_n = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
    // Select a constant, then multiply: GCC if-converts a select between two constants, but
    // not `x < kMin ? 0 : p * two_n` (it will not speculate a float multiply), and a branch in
    // the loop stops vectorisation (the whole softmax took 2.8 ns/element with it, 0.5 without).
    const float keep = x < kMin ? 0.0f : 1.0f;
    return p * two_n * keep;
}

void softmax_row(float* y, const float* x, int64_t C) {
    float m = x[0];
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < C; ++j) m = x[j] > m ? x[j] : m;
    double sum = 0.0;  // double: C up to ~1e5 keys, float would drift by ~C * eps
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < C; ++j) {
        const float e = exp_nonpositive(x[j] - m);
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
