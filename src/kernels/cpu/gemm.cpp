// CPU backend of gemm: oneDNN for f32, the reference loop for f64.
//
// One f32 case bypasses oneDNN: a single row times a transposed matrix (M = 1, B stored
// [N, K]), which is every weight product of batch-1 decoding (linear_forward on one token).
// That is N dot products of length K, bound by reading B once. oneDNN's sgemm reads B there
// at ~11 GB/s on one core, a plain vectorised dot product per row at ~22-25 GB/s (measured
// for N x K = 4096 x 384, 768 x 384 and 384 x 768 with B streamed from memory, as in decoding
// the reference model of bench/train_lm, whose decode reads 60 MiB of weights per token).
// Each output is one dot product summed by one thread in a fixed order, so the result does not
// depend on the thread count.
#include "kernels/gemm.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include "core/check.h"

namespace moe::kernels {

namespace {
void check_args(const char* op, bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda,
                int64_t ldb, int64_t ldc) {
    MOE_CHECK(M >= 0 && N >= 0 && K >= 0, op, ": negative size M=", M, " N=", N, " K=", K);
    const int64_t a_cols = ta ? M : K, b_cols = tb ? K : N;
    MOE_CHECK(lda >= std::max<int64_t>(a_cols, 1) && ldb >= std::max<int64_t>(b_cols, 1) &&
                  ldc >= std::max<int64_t>(N, 1),
              op, ": leading dimension too small: M=", M, " N=", N, " K=", K, " lda=", lda,
              " ldb=", ldb, " ldc=", ldc, " trans_a=", ta, " trans_b=", tb);
}

// Rows of B split over the threads from this many elements of B on (512 KiB, ~20 us on one
// core), and only outside a parallel region (an expert bank running experts in parallel
// calls gemm from inside one).
constexpr int64_t kRowsParallelMin = 128 * 1024;

// c[n] = alpha * dot(a[0, K), B[n, 0:K)) + beta * c[n] for n in [0, N): the M = 1, B
// transposed case. a: [K]; B: [N, K] with row stride ldb; c: [N].
void row_times_transposed(int64_t N, int64_t K, float alpha, const float* a, const float* B,
                          int64_t ldb, float beta, float* c) {
#pragma omp parallel for schedule(static) if (N > 1 && N * K >= kRowsParallelMin && \
                                              !omp_in_parallel())
    for (int64_t n = 0; n < N; ++n) {
        const float* b = B + n * ldb;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < K; ++k) s += a[k] * b[k];
        c[n] = beta == 0.0f ? alpha * s : alpha * s + beta * c[n];
    }
}

// C = beta * C, with beta = 0 writing exact zeros.
template <class R>
void scale_c(int64_t M, int64_t N, R beta, R* C, int64_t ldc) {
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j)
            C[i * ldc + j] = beta == R(0) ? R(0) : beta * C[i * ldc + j];
}
}  // namespace

template <class R>
void gemm_reference(bool ta, bool tb, int64_t M, int64_t N, int64_t K, R alpha, const R* A,
                    int64_t lda, const R* B, int64_t ldb, R beta, R* C, int64_t ldc) {
    check_args("gemm_reference", ta, tb, M, N, K, lda, ldb, ldc);
    for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < N; ++j) {
            double acc = 0.0;
            for (int64_t p = 0; p < K; ++p) {
                const R a = ta ? A[p * lda + i] : A[i * lda + p];
                const R b = tb ? B[j * ldb + p] : B[p * ldb + j];
                acc += double(a) * double(b);
            }
            R& c = C[i * ldc + j];
            c = R(double(alpha) * acc + (beta == R(0) ? 0.0 : double(beta) * double(c)));
        }
    }
}

template void gemm_reference<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*,
                                    int64_t, const float*, int64_t, float, float*, int64_t);
template void gemm_reference<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                                     int64_t, const double*, int64_t, double, double*, int64_t);

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    check_args("gemm", ta, tb, M, N, K, lda, ldb, ldc);
    if (M == 0 || N == 0) return;
    if (K == 0) return scale_c(M, N, beta, C, ldc);
    if (M == 1 && !ta && tb) return row_times_transposed(N, K, alpha, A, B, ldb, beta, C);
    const dnnl_status_t st =
        dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    MOE_CHECK(st == dnnl_success, "gemm: oneDNN sgemm failed with status ", int(st), " for M=", M,
              " N=", N, " K=", K);
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
    gemm_reference(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace moe::kernels
