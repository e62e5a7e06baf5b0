// gemm: the oneDNN path against the plain reference, for every transpose case, awkward
// sizes, padded leading dimensions and beta = 0 / 1.
#include <cmath>

#include "kernels/gemm.h"
#include "test_support.h"

namespace moe {
namespace {

struct GemmCase {
    int64_t M, N, K;
};

class GemmSweep : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GemmSweep, MatchesReferenceForEveryTransposeAndBeta) {
    const auto [M, N, K] = GetParam();
    for (int ta = 0; ta < 2; ++ta) {
        for (int tb = 0; tb < 2; ++tb) {
            for (float beta : {0.0f, 1.0f}) {
                // Pad leading dimensions by 3 so row strides are misaligned.
                const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 3, ldc = N + 3;
                const int64_t a_rows = ta ? K : M, b_rows = tb ? N : K;
                auto A = test::random_normal_f32(size_t(a_rows * lda), 1);
                auto B = test::random_normal_f32(size_t(b_rows * ldb), 2);
                auto C = test::random_normal_f32(size_t(M * ldc), 3);
                auto C_ref = C;
                if (beta == 0) std::fill(C.begin(), C.end(), NAN);  // must be overwritten
                if (beta == 0) std::fill(C_ref.begin(), C_ref.end(), NAN);
                kernels::gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, beta, C.data(),
                              ldc);
                kernels::gemm_reference(bool(ta), bool(tb), M, N, K, 0.5f, A.data(), lda, B.data(),
                                        ldb, beta, C_ref.data(), ldc);
                // Compare only the M x N window; f32 accumulation error grows like sqrt(K).
                std::vector<float> got, want;
                for (int64_t i = 0; i < M; ++i)
                    for (int64_t j = 0; j < N; ++j) {
                        got.push_back(C[i * ldc + j]);
                        want.push_back(C_ref[i * ldc + j]);
                    }
                const double tol = 1e-6 * (4 + std::sqrt(double(K))) * 8;
                EXPECT_TRUE(test::all_close(got, want, tol, 1e-5))
                    << "M=" << M << " N=" << N << " K=" << K << " ta=" << ta << " tb=" << tb
                    << " beta=" << beta;
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(AwkwardSizes, GemmSweep,
                         ::testing::Values(GemmCase{1, 1, 1}, GemmCase{3, 7, 1}, GemmCase{7, 3, 17},
                                           GemmCase{17, 64, 7}, GemmCase{64, 17, 64},
                                           GemmCase{1, 1000, 3}, GemmCase{1000, 7, 17},
                                           GemmCase{3, 17, 1000}, GemmCase{64, 64, 64}));

TEST(Gemm, ZeroInnerDimensionScalesC) {
    std::vector<float> C = {1, 2, 3, 4};
    kernels::gemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, C.data(), 2);
    EXPECT_EQ(C, (std::vector<float>{0.5f, 1, 1.5f, 2}));
}

// M = 0 or N = 0: C has no element, so nothing in the buffer may change whatever beta says
// (beta = 0 would otherwise write zeros), and A and B are not read (null is fine).
TEST(Gemm, EmptyOutputIsANoOp) {
    const float sentinel = -7.25f;
    for (float beta : {0.0f, 1.0f, 0.5f})
        for (bool ta : {false, true})
            for (bool tb : {false, true}) {
                // M = 0, N = 5, K = 3 into a buffer the size of one padded row of C.
                std::vector<float> C(8, sentinel);
                kernels::gemm(ta, tb, 0, 5, 3, 1.0f, nullptr, ta ? 1 : 3, nullptr, tb ? 3 : 5, beta,
                              C.data(), 8);
                EXPECT_EQ(C, std::vector<float>(8, sentinel)) << "M=0 beta=" << beta;
                // M = 4, N = 0, K = 3: four rows of C, each of zero width.
                std::vector<float> D(4 * 2, sentinel);
                kernels::gemm(ta, tb, 4, 0, 3, 1.0f, nullptr, ta ? 4 : 3, nullptr, tb ? 3 : 1, beta,
                              D.data(), 2);
                EXPECT_EQ(D, std::vector<float>(8, sentinel)) << "N=0 beta=" << beta;
                // The double path (the reference) keeps the same contract.
                std::vector<double> E(8, double(sentinel));
                kernels::gemm(ta, tb, 0, 5, 3, 1.0, nullptr, ta ? 1 : 3, nullptr, tb ? 3 : 5,
                              double(beta), E.data(), 8);
                EXPECT_EQ(E, std::vector<double>(8, double(sentinel))) << "double, beta=" << beta;
            }
    // Nor does a call on a null C: there is nothing to write.
    kernels::gemm(false, false, 0, 5, 3, 1.0f, nullptr, 3, nullptr, 5, 0.0f, nullptr, 5);
}

// K = 0: the product is zero, so C = beta * C on the M x N window: beta = 0 writes exact
// zeros (NaN does not leak), beta = 1 leaves C as it was, the padding is never touched.
TEST(Gemm, ZeroInnerDimensionFollowsTheBetaContract) {
    const float pad = -7.25f;
    // [2, 3] window in rows of stride 4; column 3 is padding.
    const std::vector<float> start = {NAN, 1, 2, pad, 3, NAN, 4, pad};
    std::vector<float> C = start;
    kernels::gemm(false, false, 2, 3, 0, 1.0f, nullptr, 1, nullptr, 3, 0.0f, C.data(), 4);
    EXPECT_EQ(C, (std::vector<float>{0, 0, 0, pad, 0, 0, 0, pad}));
    std::vector<float> D = {5, 1, 2, pad, 3, -6, 4, pad};
    const std::vector<float> D0 = D;
    kernels::gemm(true, true, 2, 3, 0, 1.0f, nullptr, 2, nullptr, 1, 1.0f, D.data(), 4);
    EXPECT_EQ(D, D0);
}

TEST(Gemm, RejectsTooSmallLeadingDimension) {
    std::vector<float> A(4), B(4), C(4);
    EXPECT_THROW(
        kernels::gemm(false, false, 2, 2, 2, 1.0f, A.data(), 1, B.data(), 2, 0.0f, C.data(), 2),
        Error);
}

TEST(Gemm, DoublePathIsTheReference) {
    std::vector<double> A = {1, 2, 3, 4, 5, 6};  // [2, 3]
    std::vector<double> B = {1, 0, 0, 1, 1, 1};  // [3, 2]
    std::vector<double> C(4);
    kernels::gemm(false, false, 2, 2, 3, 1.0, A.data(), 3, B.data(), 2, 0.0, C.data(), 2);
    EXPECT_EQ(C, (std::vector<double>{4, 5, 10, 11}));
}

}  // namespace
}  // namespace moe
