// Matrix products. Every matrix is row-major.
//
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C
//
// op(A) = A, stored [M, K] with row stride lda >= K, when trans_a is false;
// op(A) = A^T, stored [K, M] with lda >= M, when trans_a is true. Likewise for B.
// beta = 0 overwrites C (NaN in C does not leak through), beta = 1 accumulates: layers use
// that to add parameter gradients without a temporary.
//
// gemm(float) runs oneDNN's sgemm (230 to 300 GFLOP/s on 2 cores here). gemm(double) runs
// the plain reference: doubles exist only for finite-difference checks.
#pragma once

#include <cstdint>

namespace moe::kernels {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc);

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
          const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
          int64_t ldc);

// The plain triple loop the optimised path is tested against. Accumulates in double.
template <class R>
void gemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, R alpha,
                    const R* A, int64_t lda, const R* B, int64_t ldb, R beta, R* C, int64_t ldc);

}  // namespace moe::kernels
