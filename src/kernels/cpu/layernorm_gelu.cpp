// CPU backend of the fused LayerNorm + GELU: vectorised float rows, the unfused reference
// composition for double.
//
// The stem's unfused step made five passes over [N, C] each way: forward wrote the LayerNorm
// output and read it back for GELU; backward zeroed a buffer, wrote GELU's gradient into it
// (recomputing erfc and exp), zeroed d_in, and read both for LayerNorm's backward. At the
// recipe's shape (B = 128; 28x28x32 and 14x14x64, two convs each) that is 9.6M values per
// direction, and the profile put LayerNorm + GELU at 69 ms of a 200 ms step. Here forward
// works in tiles of rows that stay in L1 (norm, then GELU and its slope over the tile), and
// backward is two loops per row, with no transcendental: it reads d_out, grad and in once
// and writes d_in once.
//
// The math is what the unfused kernels do (row statistics in double as kernels/cpu/norms.cpp,
// the same float expression for y, Phi and phi from vec_math.h as kernels/cpu/activations.cpp),
// so forward gives their bits; `omp simd` vectorises every loop (AVX-512 under -march=native,
// masked tails for C = 17 or 100).
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

// A fork/join of the team costs a few us on 2 cores; forward takes ~3 ns per value on one
// core (GELU's erfc fit and two exps dominate), so 32k values (~100 us) is where splitting
// pays.
constexpr int64_t kParallelMin = 32 * 1024;
// Rows per parameter-gradient block: 392 blocks at the recipe's first stage (100352 rows),
// plenty to balance 2 threads, and the [blocks, 2C] double slots stay at ~200 KB.
constexpr int64_t kBlockRows = 256;
// Values per tile of rows (see tile_rows).
constexpr int64_t kTileValues = 1024;

// pointers: whether every parameter (forward) or parameter and gradient (backward) is there.
void check_args(const char* op, int64_t N, int64_t C, bool pointers) {
    MOE_CHECK(N >= 0 && C > 0, op, ": bad sizes N=", N, " C=", C);
    MOE_CHECK(pointers, op, ": a weight, bias or gradient pointer is null");
}

// n zeroed doubles, kept per calling thread between calls (a training step allocates nothing
// once the first step has sized it). Valid until the thread's next call.
double* block_scratch(int64_t n) {
    thread_local std::vector<double> buf;
    if (buf.size() < size_t(n)) buf.resize(size_t(n));
    std::fill_n(buf.data(), n, 0.0);
    return buf.data();
}

// LayerNorm statistics of one row, as kernels/cpu/norms.cpp's layernorm_row, and
// y = xhat * w + b written to y (the same float expression, so the same bits).
// y, x: [C]; w, b: [C]
void norm_row(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
              int64_t C, float eps) {
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
    for (int64_t j = 0; j < C; ++j) y[j] = (x[j] - m) * rs * w[j] + b[j];
}

// Rows of a tile: each normalised into `out`, then GELU and its slope over the whole tile in
// place. GELU runs as one flat loop over rows * C: inside a row loop of C = 32 (two 16-lane
// vectors) its ~40-deep dependency chain left the forward 1.6x slower than the unfused
// kernels (24.8 vs 15.1 ms at 100352 x 32 on one core); flat, it costs what gelu_forward does.
// out, grad, x: [rows, C]; mean, rstd: [rows]
void forward_tile(float* out, float* grad, float* mean, float* rstd, const float* x, const float* w,
                  const float* b, int64_t rows, int64_t C, float eps) {
    for (int64_t r = 0; r < rows; ++r)
        norm_row(out + r * C, mean + r, rstd + r, x + r * C, w, b, C, eps);
#pragma omp simd
    for (int64_t i = 0; i < rows * C; ++i) {
        const float y = out[i];
        float cdf, pdf;
        cpu::normal_cdf_pdf_f32(y, cdf, pdf);
        out[i] = y * cdf;
        grad[i] = std::fma(y, pdf, cdf);
    }
}

// Rows of a tile backward: g = d_out * gelu'(y) from the saved slope (dx may be dy: each row
// is read before it is written), the two LayerNorm dot products and the parameter-gradient
// terms, then
//   dx_j = rs * (g_j w_j - mean(g w) - xhat_j mean(g w xhat)).
// dx, dy, grad, x: [rows, C]; dw, db: [C] double slots; mean, rstd: [rows]
void backward_rows_of(float* dx, double* dw, double* db, const float* dy, const float* grad,
                      const float* x, const float* w, const float* mean, const float* rstd,
                      int64_t rows, int64_t C) {
    for (int64_t r = 0; r < rows; ++r) {
        const float m = mean[r], rs = rstd[r];
        const float *xr = x + r * C, *dyr = dy + r * C, *gr = grad + r * C;
        float* dxr = dx + r * C;
        double sg = 0.0, sgx = 0.0;
#pragma omp simd reduction(+ : sg, sgx)
        for (int64_t j = 0; j < C; ++j) {
            const float xhat = (xr[j] - m) * rs;
            const float g = dyr[j] * gr[j];
            dxr[j] = g;
            const float gw = g * w[j];
            sg += double(gw);
            sgx += double(gw) * double(xhat);
            dw[j] += double(g * xhat);
            db[j] += double(g);
        }
        const float mg = float(sg / double(C)), mgx = float(sgx / double(C));
#pragma omp simd
        for (int64_t j = 0; j < C; ++j) {
            const float xhat = (xr[j] - m) * rs;
            dxr[j] = rs * (dxr[j] * w[j] - mg - xhat * mgx);
        }
    }
}

// Rows per forward tile: ~1024 values (4 KiB per array, all in L1 between the two steps).
int64_t tile_rows(int64_t C) {
    return std::max<int64_t>(1, kTileValues / C);
}

// Rows [0, N) of one reduction group: d_in written, d_weight and d_bias += their sums.
void backward_rows(float* d_in, float* d_weight, float* d_bias, const float* d_out,
                   const float* grad, const float* in, const float* weight, const float* mean,
                   const float* rstd, int64_t N, int64_t C) {
    const int64_t nb = (N + kBlockRows - 1) / kBlockRows;
    double* dw = block_scratch(2 * nb * C);  // [nb, C] gain slots, then [nb, C] bias slots
    double* db = dw + nb * C;
    parallel_for(nb, N * C > kParallelMin, [&](int64_t blk) {
        const int64_t n = blk * kBlockRows, rows = std::min(kBlockRows, N - n);
        backward_rows_of(d_in + n * C, dw + blk * C, db + blk * C, d_out + n * C, grad + n * C,
                         in + n * C, weight, mean + n, rstd + n, rows, C);
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
void layernorm_gelu_forward_reference(R* out, R* grad, R* mean, R* rstd, const R* in,
                                      const R* weight, const R* bias, int64_t N, int64_t C, R eps) {
    check_args("layernorm_gelu_forward_reference", N, C, weight && bias);
    std::vector<R> y(size_t(N * C)), ones(size_t(N * C), R(1));  // y: GELU's input
    layernorm_forward_reference(y.data(), mean, rstd, in, weight, bias, N, C, eps);
    gelu_forward_reference(out, y.data(), N * C);
    std::fill(grad, grad + N * C, R(0));
    gelu_backward_reference(grad, ones.data(), y.data(), N * C);  // 0 + 1 * gelu'(y)
}

template <class R>
void layernorm_gelu_backward_reference(R* d_in, R* d_weight, R* d_bias, const R* d_out,
                                       const R* grad, const R* in, const R* weight, const R* mean,
                                       const R* rstd, int64_t N, int64_t C) {
    check_args("layernorm_gelu_backward_reference", N, C, weight && d_weight && d_bias);
    std::vector<R> d_y(size_t(N * C));
    for (int64_t i = 0; i < N * C; ++i) d_y[size_t(i)] = d_out[i] * grad[i];
    std::fill(d_in, d_in + N * C, R(0));  // written, not accumulated (d_out is read above)
    layernorm_backward_reference(d_in, d_weight, d_bias, d_y.data(), in, weight, mean, rstd, N, C);
}

#define MOE_INSTANTIATE(R)                                                                \
    template void layernorm_gelu_forward_reference<R>(R*, R*, R*, R*, const R*, const R*, \
                                                      const R*, int64_t, int64_t, R);     \
    template void layernorm_gelu_backward_reference<R>(                                   \
        R*, R*, R*, const R*, const R*, const R*, const R*, const R*, const R*, int64_t, int64_t);
MOE_INSTANTIATE(float)
MOE_INSTANTIATE(double)
#undef MOE_INSTANTIATE

// ---- float (optimised) and double (reference) entry points -----------------------------------

// in[N, C], weight[C], bias[C] -> out[N, C], grad[N, C], mean[N], rstd[N]. Rows independent.
void layernorm_gelu_forward(float* out, float* grad, float* mean, float* rstd, const float* in,
                            const float* weight, const float* bias, int64_t N, int64_t C,
                            float eps) {
    check_args("layernorm_gelu_forward", N, C, weight && bias);
    const int64_t tr = tile_rows(C), tiles = (N + tr - 1) / tr;
    parallel_for(tiles, N * C > kParallelMin, [&](int64_t t) {
        const int64_t n = t * tr, rows = std::min(tr, N - n);
        forward_tile(out + n * C, grad + n * C, mean + n, rstd + n, in + n * C, weight, bias, rows,
                     C, eps);
    });
}

void layernorm_gelu_forward(double* out, double* grad, double* mean, double* rstd, const double* in,
                            const double* weight, const double* bias, int64_t N, int64_t C,
                            double eps) {
    layernorm_gelu_forward_reference(out, grad, mean, rstd, in, weight, bias, N, C, eps);
}

// d_out[N, C], grad[N, C], in[N, C], weight[C], mean[N], rstd[N] -> d_in[N, C] (written; may
// be d_out), d_weight[C] (+=), d_bias[C] (+=).
void layernorm_gelu_backward(float* d_in, float* d_weight, float* d_bias, const float* d_out,
                             const float* grad, const float* in, const float* weight,
                             const float* mean, const float* rstd, int64_t N, int64_t C) {
    check_args("layernorm_gelu_backward", N, C, weight && d_weight && d_bias);
    // In the canonical order of kernels/grouped_reduce.h, as layernorm_backward: R
    // data-parallel ranks get the bits of one process.
    grouped_rows_reduce_pair(
        d_weight, d_bias, C, N, [&](float* dw, float* db, int64_t first, int64_t rows) {
            backward_rows(d_in + first * C, dw, db, d_out + first * C, grad + first * C,
                          in + first * C, weight, mean + first, rstd + first, rows, C);
        });
}

void layernorm_gelu_backward(double* d_in, double* d_weight, double* d_bias, const double* d_out,
                             const double* grad, const double* in, const double* weight,
                             const double* mean, const double* rstd, int64_t N, int64_t C) {
    layernorm_gelu_backward_reference(d_in, d_weight, d_bias, d_out, grad, in, weight, mean, rstd,
                                      N, C);
}

}  // namespace moe::kernels
