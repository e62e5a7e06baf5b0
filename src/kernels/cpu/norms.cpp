// CPU backend of RMSNorm and LayerNorm: vectorised float rows, reference loops for double.
//
// Row statistics (sum of squares, mean, variance, the two backward dot products) accumulate
// in double: with C = 4096 a float sum would lose ~C * eps / 2 = 2.4e-4 relative in the worst
// case, the size of the errors the fixtures check for. The parameter gradients sum over all N
// rows; the float path splits the rows into a fixed number of contiguous blocks, each summing
// into its own double buffer, then adds the blocks in order, so the result is the same run
// after run for a fixed thread count (`reduction(+:)` combines in an unspecified order).
// The block buffers are kept per calling thread between calls (block_scratch): a training
// step allocates nothing once the first step has sized them.
#include "kernels/norms.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"
#include "kernels/grouped_reduce.h"

namespace moe::kernels {

namespace {

// Below this many elements a parallel region costs more than it saves: RMSNorm over 32k floats
// takes ~6 us on one core here, and a fork/join of the team a few us on idle cores (much more
// when the 2 cores are shared with other work).
constexpr int64_t kParallelMin = 32 * 1024;

void check_sizes(const char* op, int64_t N, int64_t C) {
    MOE_CHECK(N >= 0 && C > 0, op, ": bad sizes N=", N, " C=", C);
}

// Number of row blocks for a parameter-gradient reduction: one per thread when the work is
// big enough, else 1. Depends only on the sizes and the thread count, never on scheduling.
int64_t row_blocks(int64_t N, int64_t C) {
    if (N * C <= kParallelMin) return 1;
    return std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), N));
}

// Rows [begin, end) of block b when N rows are split into nb contiguous blocks.
int64_t block_begin(int64_t b, int64_t nb, int64_t N) {
    return N * b / nb;
}

// n zeroed doubles for the row blocks' partial sums. One buffer per calling thread, grown on
// first use and reused after: a std::vector per call would allocate in every training step.
// Callers hold the pointer only until their next call (the kernels below do not nest).
double* block_scratch(int64_t n) {
    thread_local std::vector<double> buf;
    if (buf.size() < size_t(n)) buf.resize(size_t(n));
    std::fill_n(buf.data(), n, 0.0);
    return buf.data();
}

// dst[j] += sum_b parts[b * C + j], blocks added in order.
// dst: [C], parts: [nb, C]
void add_blocks(float* dst, const double* parts, int64_t nb, int64_t C) {
    for (int64_t j = 0; j < C; ++j) {
        double s = 0.0;
        for (int64_t b = 0; b < nb; ++b) s += parts[b * C + j];
        dst[j] = float(double(dst[j]) + s);
    }
}

// ---- float rows ----------------------------------------------------------------------------

void rmsnorm_row(float* out, float* rstd, const float* x, const float* w, int64_t C, float eps) {
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < C; ++j) ss += double(x[j]) * double(x[j]);
    const float rs = float(1.0 / std::sqrt(ss / double(C) + double(eps)));
    *rstd = rs;
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) out[j] = x[j] * rs * w[j];
}

// d_in_j += rs * g_j - rs^3 / C * x_j * sum_k g_k x_k, with g = d_out * w.
void rmsnorm_backward_row(float* dx, double* dw, const float* dy, const float* x, const float* w,
                          float rs, int64_t C) {
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < C; ++j) dot += double(dy[j]) * double(w[j]) * double(x[j]);
    const float k = float(double(rs) * double(rs) * double(rs) * dot / double(C));
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) {
        dx[j] += rs * dy[j] * w[j] - k * x[j];
        dw[j] += double(dy[j] * x[j] * rs);
    }
}

void layernorm_row(float* out, float* mean, float* rstd, const float* x, const float* w,
                   const float* b, int64_t C, float eps) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < C; ++j) s += double(x[j]);
    const double mu = s / double(C);
    // Two passes: E[x^2] - mu^2 cancels catastrophically when |mu| >> std (offset inputs).
    double v = 0.0;
#pragma omp simd reduction(+ : v)
    for (int64_t j = 0; j < C; ++j) v += (double(x[j]) - mu) * (double(x[j]) - mu);
    const float m = float(mu), rs = float(1.0 / std::sqrt(v / double(C) + double(eps)));
    *mean = m;
    *rstd = rs;
    if (b) {
#pragma omp simd
        for (int64_t j = 0; j < C; ++j) out[j] = (x[j] - m) * rs * w[j] + b[j];
    } else {
#pragma omp simd
        for (int64_t j = 0; j < C; ++j) out[j] = (x[j] - m) * rs * w[j];
    }
}

// d_in_j += rs * (g_j - mean(g) - xhat_j * mean(g * xhat)), g = d_out * w.
void layernorm_backward_row(float* dx, double* dw, double* db, const float* dy, const float* x,
                            const float* w, float m, float rs, int64_t C) {
    double sg = 0.0, sgx = 0.0;
#pragma omp simd reduction(+ : sg, sgx)
    for (int64_t j = 0; j < C; ++j) {
        const float g = dy[j] * w[j], xhat = (x[j] - m) * rs;
        sg += double(g);
        sgx += double(g) * double(xhat);
    }
    const float mg = float(sg / double(C)), mgx = float(sgx / double(C));
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) {
        const float xhat = (x[j] - m) * rs;
        dx[j] += rs * (dy[j] * w[j] - mg - xhat * mgx);
        dw[j] += double(dy[j] * xhat);
        if (db) db[j] += double(dy[j]);
    }
}

}  // namespace

// ---- reference loops -----------------------------------------------------------------------

template <class R>
void rmsnorm_forward_reference(R* out, R* rstd, const R* in, const R* weight, int64_t N, int64_t C,
                               R eps) {
    check_sizes("rmsnorm_forward_reference", N, C);
    for (int64_t n = 0; n < N; ++n) {
        const R* x = in + n * C;
        double ss = 0.0;
        for (int64_t j = 0; j < C; ++j) ss += double(x[j]) * double(x[j]);
        const double rs = 1.0 / std::sqrt(ss / double(C) + double(eps));
        rstd[n] = R(rs);
        for (int64_t j = 0; j < C; ++j) out[n * C + j] = R(double(x[j]) * rs * double(weight[j]));
    }
}

template <class R>
void rmsnorm_backward_reference(R* d_in, R* d_weight, const R* d_out, const R* in, const R* weight,
                                const R* rstd, int64_t N, int64_t C) {
    check_sizes("rmsnorm_backward_reference", N, C);
    std::vector<double> dw(size_t(C), 0.0);
    for (int64_t n = 0; n < N; ++n) {
        const R *x = in + n * C, *dy = d_out + n * C;
        const double rs = double(rstd[n]);
        double dot = 0.0;
        for (int64_t j = 0; j < C; ++j) dot += double(dy[j]) * double(weight[j]) * double(x[j]);
        for (int64_t j = 0; j < C; ++j) {
            const double g = double(dy[j]) * double(weight[j]);
            d_in[n * C + j] =
                R(double(d_in[n * C + j]) + rs * g - rs * rs * rs / double(C) * double(x[j]) * dot);
            dw[size_t(j)] += double(dy[j]) * double(x[j]) * rs;
        }
    }
    for (int64_t j = 0; j < C; ++j) d_weight[j] = R(double(d_weight[j]) + dw[size_t(j)]);
}

template <class R>
void layernorm_forward_reference(R* out, R* mean, R* rstd, const R* in, const R* weight,
                                 const R* bias, int64_t N, int64_t C, R eps) {
    check_sizes("layernorm_forward_reference", N, C);
    for (int64_t n = 0; n < N; ++n) {
        const R* x = in + n * C;
        double mu = 0.0;
        for (int64_t j = 0; j < C; ++j) mu += double(x[j]);
        mu /= double(C);
        double var = 0.0;
        for (int64_t j = 0; j < C; ++j) var += (double(x[j]) - mu) * (double(x[j]) - mu);
        const double rs = 1.0 / std::sqrt(var / double(C) + double(eps));
        mean[n] = R(mu);
        rstd[n] = R(rs);
        for (int64_t j = 0; j < C; ++j)
            out[n * C + j] =
                R((double(x[j]) - mu) * rs * double(weight[j]) + (bias ? double(bias[j]) : 0.0));
    }
}

template <class R>
void layernorm_backward_reference(R* d_in, R* d_weight, R* d_bias, const R* d_out, const R* in,
                                  const R* weight, const R* mean, const R* rstd, int64_t N,
                                  int64_t C) {
    check_sizes("layernorm_backward_reference", N, C);
    std::vector<double> dw(size_t(C), 0.0), db(size_t(C), 0.0);
    for (int64_t n = 0; n < N; ++n) {
        const R *x = in + n * C, *dy = d_out + n * C;
        const double mu = double(mean[n]), rs = double(rstd[n]);
        double sg = 0.0, sgx = 0.0;
        for (int64_t j = 0; j < C; ++j) {
            const double g = double(dy[j]) * double(weight[j]);
            sg += g;
            sgx += g * (double(x[j]) - mu) * rs;
        }
        for (int64_t j = 0; j < C; ++j) {
            const double g = double(dy[j]) * double(weight[j]);
            const double xhat = (double(x[j]) - mu) * rs;
            d_in[n * C + j] =
                R(double(d_in[n * C + j]) + rs * (g - sg / double(C) - xhat * sgx / double(C)));
            dw[size_t(j)] += double(dy[j]) * xhat;
            db[size_t(j)] += double(dy[j]);
        }
    }
    for (int64_t j = 0; j < C; ++j) {
        d_weight[j] = R(double(d_weight[j]) + dw[size_t(j)]);
        if (d_bias) d_bias[j] = R(double(d_bias[j]) + db[size_t(j)]);
    }
}

template void rmsnorm_forward_reference<float>(float*, float*, const float*, const float*, int64_t,
                                               int64_t, float);
template void rmsnorm_forward_reference<double>(double*, double*, const double*, const double*,
                                                int64_t, int64_t, double);
template void rmsnorm_backward_reference<float>(float*, float*, const float*, const float*,
                                                const float*, const float*, int64_t, int64_t);
template void rmsnorm_backward_reference<double>(double*, double*, const double*, const double*,
                                                 const double*, const double*, int64_t, int64_t);
template void layernorm_forward_reference<float>(float*, float*, float*, const float*, const float*,
                                                 const float*, int64_t, int64_t, float);
template void layernorm_forward_reference<double>(double*, double*, double*, const double*,
                                                  const double*, const double*, int64_t, int64_t,
                                                  double);
template void layernorm_backward_reference<float>(float*, float*, float*, const float*,
                                                  const float*, const float*, const float*,
                                                  const float*, int64_t, int64_t);
template void layernorm_backward_reference<double>(double*, double*, double*, const double*,
                                                   const double*, const double*, const double*,
                                                   const double*, int64_t, int64_t);

// ---- float (optimised) and double (reference) entry points ---------------------------------

// in[N, C], weight[C] -> out[N, C], rstd[N]. Rows are independent: one per iteration.
void rmsnorm_forward(float* out, float* rstd, const float* in, const float* weight, int64_t N,
                     int64_t C, float eps) {
    check_sizes("rmsnorm_forward", N, C);
#pragma omp parallel for schedule(static) if (N * C > kParallelMin)
    for (int64_t n = 0; n < N; ++n) rmsnorm_row(out + n * C, rstd + n, in + n * C, weight, C, eps);
}

void rmsnorm_forward(double* out, double* rstd, const double* in, const double* weight, int64_t N,
                     int64_t C, double eps) {
    rmsnorm_forward_reference(out, rstd, in, weight, N, C, eps);
}

namespace {
void rmsnorm_backward_rows(float* d_in, float* d_weight, const float* d_out, const float* in,
                           const float* weight, const float* rstd, int64_t N, int64_t C) {
    const int64_t nb = row_blocks(N, C);
    double* dw = block_scratch(nb * C);  // [nb, C]
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int64_t b = 0; b < nb; ++b) {
        double* dwb = dw + b * C;
        for (int64_t n = block_begin(b, nb, N); n < block_begin(b + 1, nb, N); ++n)
            rmsnorm_backward_row(d_in + n * C, dwb, d_out + n * C, in + n * C, weight, rstd[n], C);
    }
    add_blocks(d_weight, dw, nb, C);
}
}  // namespace

// d_out[N, C], in[N, C], weight[C], rstd[N] -> d_in[N, C] (+=), d_weight[C] (+=).
void rmsnorm_backward(float* d_in, float* d_weight, const float* d_out, const float* in,
                      const float* weight, const float* rstd, int64_t N, int64_t C) {
    check_sizes("rmsnorm_backward", N, C);
    // d_weight sums over rows: in the canonical order of kernels/grouped_reduce.h (d_in is
    // per row, the same however the rows are grouped).
    grouped_rows_reduce(d_weight, C, N, [&](float* dw, int64_t first, int64_t rows) {
        rmsnorm_backward_rows(d_in + first * C, dw, d_out + first * C, in + first * C, weight,
                              rstd + first, rows, C);
    });
}

void rmsnorm_backward(double* d_in, double* d_weight, const double* d_out, const double* in,
                      const double* weight, const double* rstd, int64_t N, int64_t C) {
    rmsnorm_backward_reference(d_in, d_weight, d_out, in, weight, rstd, N, C);
}

// in[N, C], weight[C], bias[C] -> out[N, C], mean[N], rstd[N].
void layernorm_forward(float* out, float* mean, float* rstd, const float* in, const float* weight,
                       const float* bias, int64_t N, int64_t C, float eps) {
    check_sizes("layernorm_forward", N, C);
#pragma omp parallel for schedule(static) if (N * C > kParallelMin)
    for (int64_t n = 0; n < N; ++n)
        layernorm_row(out + n * C, mean + n, rstd + n, in + n * C, weight, bias, C, eps);
}

void layernorm_forward(double* out, double* mean, double* rstd, const double* in,
                       const double* weight, const double* bias, int64_t N, int64_t C, double eps) {
    layernorm_forward_reference(out, mean, rstd, in, weight, bias, N, C, eps);
}

namespace {
void layernorm_backward_rows(float* d_in, float* d_weight, float* d_bias, const float* d_out,
                             const float* in, const float* weight, const float* mean,
                             const float* rstd, int64_t N, int64_t C) {
    const int64_t nb = row_blocks(N, C);
    // [nb, C] gain blocks, then (with a bias) [nb, C] bias blocks.
    double* dw = block_scratch((d_bias ? 2 : 1) * nb * C);
    double* db = d_bias ? dw + nb * C : nullptr;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int64_t b = 0; b < nb; ++b) {
        double* dwb = dw + b * C;
        double* dbb = d_bias ? db + b * C : nullptr;
        for (int64_t n = block_begin(b, nb, N); n < block_begin(b + 1, nb, N); ++n)
            layernorm_backward_row(d_in + n * C, dwb, dbb, d_out + n * C, in + n * C, weight,
                                   mean[n], rstd[n], C);
    }
    add_blocks(d_weight, dw, nb, C);
    if (d_bias) add_blocks(d_bias, db, nb, C);
}
}  // namespace

// d_out[N, C], in[N, C], weight[C], mean[N], rstd[N] -> d_in[N, C], d_weight[C], d_bias[C]
// (all +=; d_bias may be null).
void layernorm_backward(float* d_in, float* d_weight, float* d_bias, const float* d_out,
                        const float* in, const float* weight, const float* mean, const float* rstd,
                        int64_t N, int64_t C) {
    check_sizes("layernorm_backward", N, C);
    // d_weight and d_bias sum over rows: in the canonical order of kernels/grouped_reduce.h,
    // as RMSNorm's gain, so that R data-parallel ranks get the bits of one process.
    grouped_rows_reduce_pair(
        d_weight, d_bias, C, N, [&](float* dw, float* db, int64_t first, int64_t rows) {
            layernorm_backward_rows(d_in + first * C, dw, db, d_out + first * C, in + first * C,
                                    weight, mean + first, rstd + first, rows, C);
        });
}

void layernorm_backward(double* d_in, double* d_weight, double* d_bias, const double* d_out,
                        const double* in, const double* weight, const double* mean,
                        const double* rstd, int64_t N, int64_t C) {
    layernorm_backward_reference(d_in, d_weight, d_bias, d_out, in, weight, mean, rstd, N, C);
}

}  // namespace moe::kernels
