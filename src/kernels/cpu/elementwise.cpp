// CPU backend of the elementwise kernels: vectorised float loops (parallel when large),
// reference loops for double.
//
// Reductions split the array into a fixed number of contiguous blocks (one per thread, or one
// when small), each summed in double, then add the block sums in order: the result depends on
// the sizes and the thread count only, never on scheduling (`reduction(+:)` combines partial
// sums in an unspecified order). The block results live on the stack (at most kMaxBlocks of
// them), so a reduction allocates nothing.
#include "kernels/elementwise.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <climits>

#include "core/check.h"
#include "core/dtype.h"

namespace moe::kernels {

namespace {

// Below this many elements a parallel region costs more than it saves: a sum over 32k floats
// takes ~3 us on one core here, about what a fork/join of the team costs on idle cores.
constexpr int64_t kParallelMin = 32 * 1024;

void check_n(const char* op, int64_t n) {
    MOE_CHECK(n >= 0, op, ": negative size n=", n);
}

// Most blocks a reduction splits into: the block results are a stack array of this size.
// With more threads than this, the extra threads idle in reductions (the result then depends
// on min(threads, kMaxBlocks), still never on scheduling).
constexpr int64_t kMaxBlocks = 1024;

int64_t num_blocks(int64_t n) {
    return n > kParallelMin ? std::clamp<int64_t>(omp_get_max_threads(), 1, kMaxBlocks) : 1;
}

// Applies block_fn(begin, end) -> double to nb fixed contiguous blocks of [0, n) and returns
// the block results combined with combine(acc, value), in block order.
template <class BlockFn, class Combine>
double reduce_blocks(int64_t n, double init, BlockFn block_fn, Combine combine) {
    const int64_t nb = num_blocks(n);
    if (nb == 1) return combine(init, block_fn(int64_t(0), n));
    std::array<double, kMaxBlocks> part;  // [nb] used; 8 KiB of stack, no allocation
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; ++b) part[size_t(b)] = block_fn(n * b / nb, n * (b + 1) / nb);
    double acc = init;
    for (int64_t b = 0; b < nb; ++b) acc = combine(acc, part[size_t(b)]);
    return acc;
}

double sum_block(const float* x, int64_t begin, int64_t end) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = begin; i < end; ++i) s += double(x[i]);
    return s;
}

double sum_squares_block(const float* x, int64_t begin, int64_t end) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = begin; i < end; ++i) s += double(x[i]) * double(x[i]);
    return s;
}

float max_block(const float* x, int64_t begin, int64_t end) {
    float m = x[begin];
#pragma omp simd reduction(max : m)
    for (int64_t i = begin; i < end; ++i) m = x[i] > m ? x[i] : m;
    return m;
}

// The bit operations of moe::f32_to_bf16, inlined so GCC vectorises the array loop.
// vcvtneps2bf16 (avx512_bf16) would be faster but flushes denormals to zero, which would break
// bit-for-bit agreement with the scalar conversion.
inline uint16_t f32_to_bf16_bits(float x) {
    const uint32_t bits = std::bit_cast<uint32_t>(x);
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;  // nearest even
    const uint32_t quiet_nan = (bits >> 16) | 0x40u;  // keeps sign and payload, sets quiet bit
    return uint16_t((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

}  // namespace

// ---- reference loops -----------------------------------------------------------------------

template <class R>
void add_reference(R* y, const R* a, const R* b, int64_t n) {
    check_n("add_reference", n);
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

template <class R>
void axpy_reference(R* y, R alpha, const R* x, int64_t n) {
    check_n("axpy_reference", n);
    for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <class R>
void scale_reference(R* y, R alpha, int64_t n) {
    check_n("scale_reference", n);
    for (int64_t i = 0; i < n; ++i) y[i] *= alpha;
}

template <class R>
void mul_reference(R* y, const R* a, const R* b, int64_t n) {
    check_n("mul_reference", n);
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}

template <class R>
double sum_reference(const R* x, int64_t n) {
    check_n("sum_reference", n);
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += double(x[i]);
    return s;
}

template <class R>
double sum_squares_reference(const R* x, int64_t n) {
    check_n("sum_squares_reference", n);
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
    return s;
}

template <class R>
R max_reference(const R* x, int64_t n) {
    MOE_CHECK(n >= 1, "max_reference: needs n >= 1, got n=", n);
    R m = x[0];
    for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
    return m;
}

void argmax_rows_reference(int32_t* out, const float* x, int64_t rows, int64_t C) {
    MOE_CHECK(rows >= 0 && C > 0 && C <= INT32_MAX, "argmax_rows_reference: bad sizes rows=", rows,
              " C=", C);
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * C;
        int64_t best = 0;
        for (int64_t j = 1; j < C; ++j)
            if (xr[j] > xr[best]) best = j;
        out[r] = int32_t(best);
    }
}

void f32_to_bf16_reference(uint16_t* dst, const float* src, int64_t n) {
    check_n("f32_to_bf16_reference", n);
    for (int64_t i = 0; i < n; ++i) dst[i] = moe::f32_to_bf16(src[i]);
}

void bf16_to_f32_reference(float* dst, const uint16_t* src, int64_t n) {
    check_n("bf16_to_f32_reference", n);
    for (int64_t i = 0; i < n; ++i) dst[i] = moe::bf16_to_f32(src[i]);
}

template void add_reference<float>(float*, const float*, const float*, int64_t);
template void add_reference<double>(double*, const double*, const double*, int64_t);
template void axpy_reference<float>(float*, float, const float*, int64_t);
template void axpy_reference<double>(double*, double, const double*, int64_t);
template void scale_reference<float>(float*, float, int64_t);
template void scale_reference<double>(double*, double, int64_t);
template void mul_reference<float>(float*, const float*, const float*, int64_t);
template void mul_reference<double>(double*, const double*, const double*, int64_t);
template double sum_reference<float>(const float*, int64_t);
template double sum_reference<double>(const double*, int64_t);
template double sum_squares_reference<float>(const float*, int64_t);
template double sum_squares_reference<double>(const double*, int64_t);
template float max_reference<float>(const float*, int64_t);
template double max_reference<double>(const double*, int64_t);

// ---- float (optimised) and double (reference) entry points ---------------------------------
// Every array below is flat [n]. Elementwise loops write each index once from the same index,
// so y may alias a, b or x.

void add(float* y, const float* a, const float* b, int64_t n) {
    check_n("add", n);
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}
void add(double* y, const double* a, const double* b, int64_t n) {
    add_reference(y, a, b, n);
}

void axpy(float* y, float alpha, const float* x, int64_t n) {
    check_n("axpy", n);
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}
void axpy(double* y, double alpha, const double* x, int64_t n) {
    axpy_reference(y, alpha, x, n);
}

void scale(float* y, float alpha, int64_t n) {
    check_n("scale", n);
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) y[i] *= alpha;
}
void scale(double* y, double alpha, int64_t n) {
    scale_reference(y, alpha, n);
}

void mul(float* y, const float* a, const float* b, int64_t n) {
    check_n("mul", n);
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}
void mul(double* y, const double* a, const double* b, int64_t n) {
    mul_reference(y, a, b, n);
}

double sum(const float* x, int64_t n) {
    check_n("sum", n);
    return reduce_blocks(
        n, 0.0, [x](int64_t b, int64_t e) { return sum_block(x, b, e); },
        [](double acc, double v) { return acc + v; });
}
double sum(const double* x, int64_t n) {
    return sum_reference(x, n);
}

double sum_squares(const float* x, int64_t n) {
    check_n("sum_squares", n);
    return reduce_blocks(
        n, 0.0, [x](int64_t b, int64_t e) { return sum_squares_block(x, b, e); },
        [](double acc, double v) { return acc + v; });
}
double sum_squares(const double* x, int64_t n) {
    return sum_squares_reference(x, n);
}

float max(const float* x, int64_t n) {
    MOE_CHECK(n >= 1, "max: needs n >= 1, got n=", n);
    // Blocks are never empty: num_blocks > 1 only when n > kParallelMin >> thread count.
    return float(reduce_blocks(
        n, double(x[0]), [x](int64_t b, int64_t e) { return double(max_block(x, b, e)); },
        [](double acc, double v) { return v > acc ? v : acc; }));
}
double max(const double* x, int64_t n) {
    return max_reference(x, n);
}

// x[rows, C] -> out[rows]. Two vectorised passes per row (the max, then its first index)
// instead of one branchy scalar pass.
void argmax_rows(int32_t* out, const float* x, int64_t rows, int64_t C) {
    MOE_CHECK(rows >= 0 && C > 0 && C <= INT32_MAX, "argmax_rows: bad sizes rows=", rows, " C=", C);
#pragma omp parallel for schedule(static) if (rows * C > kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * C;
        const float m = max_block(xr, 0, C);
        int64_t best = 0;  // stays 0 only when no element equals m (a NaN max)
        for (int64_t j = 0; j < C; ++j)
            if (xr[j] == m) {
                best = j;
                break;
            }
        out[r] = int32_t(best);
    }
}

// src[n] -> dst[n].
void f32_to_bf16(uint16_t* dst, const float* src, int64_t n) {
    check_n("f32_to_bf16", n);
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16_bits(src[i]);
}

void bf16_to_f32(float* dst, const uint16_t* src, int64_t n) {
    check_n("bf16_to_f32", n);
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(uint32_t(src[i]) << 16);
}

}  // namespace moe::kernels
