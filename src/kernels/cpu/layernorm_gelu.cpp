// CPU backend of the fused LayerNorm + GELU: vectorised float rows, the unfused reference
// composition for double.
//
// The stem's unfused step made five passes over [N, C] each way: forward wrote the LayerNorm
// output and read it back for GELU; backward zeroed a buffer, wrote GELU's gradient into it,
// zeroed d_in, and read both for LayerNorm's backward. At the recipe's shape (B = 128,
// 28x28x32 and 14x14x64, two convs each) that is 9.6M floats per call, and the profile put
// LayerNorm + GELU at 69 ms of a 200 ms step. Here one row of C values (128 or 256 bytes)
// stays in L1 between the row's passes, so memory sees `in` and `out` once forward and
// `d_out`, `in` and `d_in` once backward.
//
// Float rows follow kernels/cpu/norms.cpp (row statistics in double; the same float
// expression for y) and kernels/cpu/activations.cpp (the same Phi and phi from vec_math.h),
// so the fused forward gives the bits of layernorm_forward then gelu_forward; `omp simd`
// vectorises every row loop (AVX-512 under -march=native, masked tails for C = 17 or 100).
//
// d_weight and d_bias: rows are cut into fixed blocks of kBlockRows, each summed into its
// own double slot by whichever thread runs it, then the slots are added in block order.
// The split depends only on N, never on the thread count or timing, so a resumed run
// repeats an uninterrupted one bit for bit.
#include "kernels/layernorm_gelu.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"
#include "core/parallel_for.h"
#include "kernels/activations.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/grouped_reduce.h"
#include "kernels/norms.h"

namespace moe::kernels {

namespace {

// A fork/join of the team costs a few us on 2 cores; a row of 32 takes ~60 ns forward
// (GELU's erfc and two exps dominate), so 32k elements (~60 us) is where splitting pays.
constexpr int64_t kParallelMin = 32 * 1024;
// Rows per parameter-gradient block: 392 blocks at the recipe's first stage (100352 rows),
// plenty to balance 2 threads, and the [blocks, 2C] double slots stay at ~200 KB.
constexpr int64_t kBlockRows = 256;

void check_args(const char* op, int64_t N, int64_t C, const void* weight, const void* bias) {
    MOE_CHECK(N >= 0 && C > 0, op, ": bad sizes N=", N, " C=", C);
    MOE_CHECK(weight && bias, op, ": needs a weight and a bias");
}

// n zeroed doubles, kept per calling thread between calls (a training step allocates nothing
// once the first step has sized it). Valid until the thread's next call.
double* block_scratch(int64_t n) {
    thread_local std::vector<double> buf;
    if (buf.size() < size_t(n)) buf.resize(size_t(n));
    std::fill_n(buf.data(), n, 0.0);
    return buf.data();
}

// One row: statistics as kernels/cpu/norms.cpp's layernorm_row, then y and GELU in one loop.
// out, x: [C]; w, b: [C]
void forward_row(float* out, float* mean, float* rstd, const float* x, const float* w,
                 const float* b, int64_t C, float eps) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < C; ++j) s += double(x[j]);
    const double mu = s / double(C);
    // Two passes over the (L1-resident) row: E[x^2] - mu^2 cancels when |mu| >> std.
    double v = 0.0;
#pragma omp simd reduction(+ : v)
    for (int64_t j = 0; j < C; ++j) v += (double(x[j]) - mu) * (double(x[j]) - mu);
    const float m = float(mu), rs = float(1.0 / std::sqrt(v / double(C) + double(eps)));
    *mean = m;
    *rstd = rs;
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) {
        const float y = (x[j] - m) * rs * w[j] + b[j];
        float cdf, pdf;
        cpu::normal_cdf_pdf_f32(y, cdf, pdf);
        out[j] = y * cdf;
    }
}

// One row backward. First loop: g_pre = d_out * gelu'(y) (y recomputed), parked in dx (the
// row is in L1 for the second loop; dx may be dy: element j is read before it is written),
// the two LayerNorm dot products and the parameter-gradient terms. Second loop:
//   dx_j = rs * (g_pre_j w_j - mean(g_pre w) - xhat_j mean(g_pre w xhat)).
// dx, dy, x: [C]; dw, db: [C] double slots; w, b: [C]
void backward_row(float* dx, double* dw, double* db, const float* dy, const float* x,
                  const float* w, const float* b, float m, float rs, int64_t C) {
    double sg = 0.0, sgx = 0.0;
#pragma omp simd reduction(+ : sg, sgx)
    for (int64_t j = 0; j < C; ++j) {
        const float xhat = (x[j] - m) * rs;
        const float y = xhat * w[j] + b[j];
        float cdf, pdf;
        cpu::normal_cdf_pdf_f32(y, cdf, pdf);
        const float gp = dy[j] * std::fma(y, pdf, cdf);
        dx[j] = gp;
        const float g = gp * w[j];
        sg += double(g);
        sgx += double(g) * double(xhat);
        dw[j] += double(gp * xhat);
        db[j] += double(gp);
    }
    const float mg = float(sg / double(C)), mgx = float(sgx / double(C));
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) {
        const float xhat = (x[j] - m) * rs;
        dx[j] = rs * (dx[j] * w[j] - mg - xhat * mgx);
    }
}

// Rows [0, N) of one reduction group: d_in written, d_weight and d_bias += their sums.
void backward_rows(float* d_in, float* d_weight, float* d_bias, const float* d_out, const float* in,
                   const float* weight, const float* bias, const float* mean, const float* rstd,
                   int64_t N, int64_t C) {
    const int64_t nb = (N + kBlockRows - 1) / kBlockRows;
    double* dw = block_scratch(2 * nb * C);  // [nb, C] gain slots, then [nb, C] bias slots
    double* db = dw + nb * C;
    parallel_for(nb, N * C > kParallelMin, [&](int64_t blk) {
        const int64_t end = std::min(N, (blk + 1) * kBlockRows);
        for (int64_t n = blk * kBlockRows; n < end; ++n)
            backward_row(d_in + n * C, dw + blk * C, db + blk * C, d_out + n * C, in + n * C,
                         weight, bias, mean[n], rstd[n], C);
    });
    for (int64_t j = 0; j < C; ++j) {
        double sw = 0.0, sb = 0.0;
        for (int64_t blk = 0; blk < nb; ++blk) sw += dw[blk * C + j], sb += db[blk * C + j];
        d_weight[j] = float(double(d_weight[j]) + sw);
        d_bias[j] = float(double(d_bias[j]) + sb);
    }
}

}  // namespace

// ---- reference: the unfused composition -----------------------------------------------------

template <class R>
void layernorm_gelu_forward_reference(R* out, R* mean, R* rstd, const R* in, const R* weight,
                                      const R* bias, int64_t N, int64_t C, R eps) {
    check_args("layernorm_gelu_forward_reference", N, C, weight, bias);
    std::vector<R> y(size_t(N * C));  // the LayerNorm output, GELU's input
    layernorm_forward_reference(y.data(), mean, rstd, in, weight, bias, N, C, eps);
    gelu_forward_reference(out, y.data(), N * C);
}

template <class R>
void layernorm_gelu_backward_reference(R* d_in, R* d_weight, R* d_bias, const R* d_out, const R* in,
                                       const R* weight, const R* bias, const R* mean, const R* rstd,
                                       int64_t N, int64_t C) {
    check_args("layernorm_gelu_backward_reference", N, C, weight, bias);
    // y from the saved statistics, rounded to R as the forward stored it.
    std::vector<R> y(size_t(N * C)), d_y(size_t(N * C), R(0));
    for (int64_t n = 0; n < N; ++n)
        for (int64_t j = 0; j < C; ++j)
            y[size_t(n * C + j)] =
                R((double(in[n * C + j]) - double(mean[n])) * double(rstd[n]) * double(weight[j]) +
                  double(bias[j]));
    gelu_backward_reference(d_y.data(), d_out, y.data(), N * C);
    std::fill(d_in, d_in + N * C, R(0));  // written, not accumulated (d_out is read above)
    layernorm_backward_reference(d_in, d_weight, d_bias, d_y.data(), in, weight, mean, rstd, N, C);
}

template void layernorm_gelu_forward_reference<float>(float*, float*, float*, const float*,
                                                      const float*, const float*, int64_t, int64_t,
                                                      float);
template void layernorm_gelu_forward_reference<double>(double*, double*, double*, const double*,
                                                       const double*, const double*, int64_t,
                                                       int64_t, double);
template void layernorm_gelu_backward_reference<float>(float*, float*, float*, const float*,
                                                       const float*, const float*, const float*,
                                                       const float*, const float*, int64_t,
                                                       int64_t);
template void layernorm_gelu_backward_reference<double>(double*, double*, double*, const double*,
                                                        const double*, const double*, const double*,
                                                        const double*, const double*, int64_t,
                                                        int64_t);

// ---- float (optimised) and double (reference) entry points -----------------------------------

// in[N, C], weight[C], bias[C] -> out[N, C], mean[N], rstd[N]. Rows are independent.
void layernorm_gelu_forward(float* out, float* mean, float* rstd, const float* in,
                            const float* weight, const float* bias, int64_t N, int64_t C,
                            float eps) {
    check_args("layernorm_gelu_forward", N, C, weight, bias);
    parallel_for(N, N * C > kParallelMin, [&](int64_t n) {
        forward_row(out + n * C, mean + n, rstd + n, in + n * C, weight, bias, C, eps);
    });
}

void layernorm_gelu_forward(double* out, double* mean, double* rstd, const double* in,
                            const double* weight, const double* bias, int64_t N, int64_t C,
                            double eps) {
    layernorm_gelu_forward_reference(out, mean, rstd, in, weight, bias, N, C, eps);
}

// d_out[N, C], in[N, C], weight[C], bias[C], mean[N], rstd[N] -> d_in[N, C] (written; may be
// d_out), d_weight[C] (+=), d_bias[C] (+=).
void layernorm_gelu_backward(float* d_in, float* d_weight, float* d_bias, const float* d_out,
                             const float* in, const float* weight, const float* bias,
                             const float* mean, const float* rstd, int64_t N, int64_t C) {
    check_args("layernorm_gelu_backward", N, C, weight, bias);
    MOE_CHECK(d_weight && d_bias, "layernorm_gelu_backward: needs d_weight and d_bias");
    // In the canonical order of kernels/grouped_reduce.h, as layernorm_backward: R
    // data-parallel ranks get the bits of one process.
    grouped_rows_reduce_pair(
        d_weight, d_bias, C, N, [&](float* dw, float* db, int64_t first, int64_t rows) {
            backward_rows(d_in + first * C, dw, db, d_out + first * C, in + first * C, weight, bias,
                          mean + first, rstd + first, rows, C);
        });
}

void layernorm_gelu_backward(double* d_in, double* d_weight, double* d_bias, const double* d_out,
                             const double* in, const double* weight, const double* bias,
                             const double* mean, const double* rstd, int64_t N, int64_t C) {
    layernorm_gelu_backward_reference(d_in, d_weight, d_bias, d_out, in, weight, bias, mean, rstd,
                                      N, C);
}

}  // namespace moe::kernels
