// RMSNorm and LayerNorm: the vectorised float path against the reference on awkward and
// misaligned shapes, every backward by finite differences in double, forward + backward against
// PyTorch, and run-to-run identical parameter gradients on the parallel path.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/norms.h"
#include "test_support.h"

namespace moe {
namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();  // 1.19e-7

// v copied one element past the start of a fresh buffer: data() is misaligned by 4 bytes.
struct Misaligned {
    explicit Misaligned(const std::vector<float>& v) : buf(v.size() + 1) {
        std::copy(v.begin(), v.end(), buf.begin() + 1);
    }
    float* data() { return buf.data() + 1; }
    std::vector<float> values() const { return {buf.begin() + 1, buf.end()}; }
    std::vector<float> buf;
};

std::vector<double> plus(std::vector<double> v, double c) {
    for (auto& x : v) x += c;
    return v;
}

struct Shape2 {
    int64_t N, C;
};

class NormSweep : public ::testing::TestWithParam<Shape2> {};

TEST_P(NormSweep, RmsNormMatchesReference) {
    const auto [N, C] = GetParam();
    const auto x = test::random_normal_f32(size_t(N * C), 1);
    const auto w = test::random_normal_f32(size_t(C), 2);
    const auto dy = test::random_normal_f32(x.size(), 3);
    const auto dx0 = test::random_normal_f32(x.size(), 4);
    const auto dw0 = test::random_normal_f32(w.size(), 5);
    const float eps = 1e-5f;

    Misaligned xm(x), wm(w), out(std::vector<float>(x.size())), rstd{std::vector<float>(N)};
    std::vector<float> out_ref(x.size()), rstd_ref(static_cast<size_t>(N));
    kernels::rmsnorm_forward(out.data(), rstd.data(), xm.data(), wm.data(), N, C, eps);
    kernels::rmsnorm_forward_reference(out_ref.data(), rstd_ref.data(), x.data(), w.data(), N, C,
                                       eps);
    EXPECT_TRUE(test::all_close(rstd.values(), rstd_ref, 0, 4 * kEps)) << N << "x" << C;
    EXPECT_TRUE(test::all_close(out.values(), out_ref, 4 * kEps, 4 * kEps)) << N << "x" << C;

    // Both backwards from the same saved rstd, into non-zero gradients (they accumulate).
    Misaligned dym(dy), dx(dx0), dw(dw0), rstdm(rstd_ref);
    auto dx_ref = dx0, dw_ref = dw0;
    kernels::rmsnorm_backward(dx.data(), dw.data(), dym.data(), xm.data(), wm.data(), rstdm.data(),
                              N, C);
    kernels::rmsnorm_backward_reference(dx_ref.data(), dw_ref.data(), dy.data(), x.data(), w.data(),
                                        rstd_ref.data(), N, C);
    EXPECT_TRUE(test::all_close(dx.values(), dx_ref, 16 * kEps, 16 * kEps)) << N << "x" << C;
    // d_weight sums N products of ~unit size: rounding grows with N.
    EXPECT_TRUE(test::all_close(dw.values(), dw_ref, 4 * kEps * double(N), 8 * kEps))
        << N << "x" << C;
}

TEST_P(NormSweep, LayerNormMatchesReference) {
    const auto [N, C] = GetParam();
    const auto x = test::random_normal_f32(size_t(N * C), 6);
    const auto w = test::random_normal_f32(size_t(C), 7);
    const auto b = test::random_normal_f32(size_t(C), 8);
    const auto dy = test::random_normal_f32(x.size(), 9);
    const auto dx0 = test::random_normal_f32(x.size(), 10);
    const auto dw0 = test::random_normal_f32(w.size(), 11);
    const auto db0 = test::random_normal_f32(w.size(), 12);
    const float eps = 1e-5f;

    Misaligned xm(x), wm(w), bm(b), out(std::vector<float>(x.size()));
    Misaligned mean{std::vector<float>(N)}, rstd{std::vector<float>(N)};
    std::vector<float> out_ref(x.size()), mean_ref(static_cast<size_t>(N)),
        rstd_ref(static_cast<size_t>(N));
    kernels::layernorm_forward(out.data(), mean.data(), rstd.data(), xm.data(), wm.data(),
                               bm.data(), N, C, eps);
    kernels::layernorm_forward_reference(out_ref.data(), mean_ref.data(), rstd_ref.data(), x.data(),
                                         w.data(), b.data(), N, C, eps);
    EXPECT_TRUE(test::all_close(mean.values(), mean_ref, kEps, kEps)) << N << "x" << C;
    // C = 1 has zero variance: rstd = 1/sqrt(eps) = 316.
    EXPECT_TRUE(test::all_close(rstd.values(), rstd_ref, 0, 4 * kEps)) << N << "x" << C;
    EXPECT_TRUE(test::all_close(out.values(), out_ref, 8 * kEps, 8 * kEps)) << N << "x" << C;

    Misaligned dym(dy), dx(dx0), dw(dw0), db(db0), meanm(mean_ref), rstdm(rstd_ref);
    auto dx_ref = dx0, dw_ref = dw0, db_ref = db0;
    kernels::layernorm_backward(dx.data(), dw.data(), db.data(), dym.data(), xm.data(), wm.data(),
                                meanm.data(), rstdm.data(), N, C);
    kernels::layernorm_backward_reference(dx_ref.data(), dw_ref.data(), db_ref.data(), dy.data(),
                                          x.data(), w.data(), mean_ref.data(), rstd_ref.data(), N,
                                          C);
    // d_in is rstd * (...): with C = 1, rstd = 316 scales the absolute error.
    const double dx_atol = 16 * kEps * double(*std::max_element(rstd_ref.begin(), rstd_ref.end()));
    EXPECT_TRUE(test::all_close(dx.values(), dx_ref, dx_atol, 16 * kEps)) << N << "x" << C;
    EXPECT_TRUE(test::all_close(dw.values(), dw_ref, 4 * kEps * double(N), 8 * kEps))
        << N << "x" << C;
    EXPECT_TRUE(test::all_close(db.values(), db_ref, 4 * kEps * double(N), 8 * kEps))
        << N << "x" << C;
}

INSTANTIATE_TEST_SUITE_P(AwkwardSizes, NormSweep,
                         ::testing::Values(Shape2{1, 1}, Shape2{1, 1000}, Shape2{3, 7},
                                           Shape2{7, 17}, Shape2{17, 64}, Shape2{64, 3},
                                           Shape2{1000, 7}, Shape2{3, 1000}, Shape2{64, 1000},
                                           Shape2{1000, 1000}));

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
    const int64_t N = 3, C = 5;
    const double eps = 1e-5;
    auto x = test::random_normal(size_t(N * C), 21);
    auto w = test::random_normal(size_t(C), 22);
    const auto wts = test::random_normal(x.size(), 23);  // d loss / d out
    std::vector<double> out(x.size()), rstd(static_cast<size_t>(N));
    auto loss = [&] {
        kernels::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
        return test::weighted_sum(out, wts);
    };
    const auto num_dx = test::numeric_gradient(loss, x.data(), x.size());
    const auto num_dw = test::numeric_gradient(loss, w.data(), w.size());
    loss();
    std::vector<double> dx(x.size(), 0.0), dw(w.size(), 0.0);
    kernels::rmsnorm_backward(dx.data(), dw.data(), wts.data(), x.data(), w.data(), rstd.data(), N,
                              C);
    EXPECT_TRUE(test::all_close(dx, num_dx, 1e-8, 1e-6));
    EXPECT_TRUE(test::all_close(dw, num_dw, 1e-8, 1e-6));
}

TEST(LayerNorm, BackwardMatchesFiniteDifferences) {
    const int64_t N = 3, C = 5;
    const double eps = 1e-5;
    auto x = test::random_normal(size_t(N * C), 24);
    auto w = test::random_normal(size_t(C), 25);
    auto b = test::random_normal(size_t(C), 26);
    const auto wts = test::random_normal(x.size(), 27);
    std::vector<double> out(x.size()), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
    auto loss = [&] {
        kernels::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(),
                                   b.data(), N, C, eps);
        return test::weighted_sum(out, wts);
    };
    const auto num_dx = test::numeric_gradient(loss, x.data(), x.size());
    const auto num_dw = test::numeric_gradient(loss, w.data(), w.size());
    const auto num_db = test::numeric_gradient(loss, b.data(), b.size());
    loss();
    std::vector<double> dx(x.size(), 0.0), dw(w.size(), 0.0), db(b.size(), 0.0);
    kernels::layernorm_backward(dx.data(), dw.data(), db.data(), wts.data(), x.data(), w.data(),
                                mean.data(), rstd.data(), N, C);
    EXPECT_TRUE(test::all_close(dx, num_dx, 1e-8, 1e-6));
    EXPECT_TRUE(test::all_close(dw, num_dw, 1e-8, 1e-6));
    EXPECT_TRUE(test::all_close(db, num_db, 1e-8, 1e-6));
}

class NormsFixture : public ::testing::Test {
  protected:
    test::Fixture f{"norms"};
    int64_t N = f.shape("x")[0], C = f.shape("x")[1];
    std::vector<double> x = f.get("x"), w = f.get("w"), b = f.get("b"), dy = f.get("dy");
    double eps = f.get("eps")[0];
    // Row 0 of x is offset by 50: float inputs carry 50 * eps / 2 of rounding into x - mean.
    double f32_atol = 8 * kEps * 51;
};

TEST_F(NormsFixture, LayerNormMatchesPyTorch) {
    // Gradients start at 1: the backward must add to them.
    std::vector<double> y(x.size()), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
    std::vector<double> dx(x.size(), 1.0), dw(w.size(), 1.0), db(b.size(), 1.0);
    kernels::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N,
                               C, eps);
    kernels::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(),
                                mean.data(), rstd.data(), N, C);
    EXPECT_TRUE(test::all_close(y, f.get("ln_y"), 1e-12, 1e-12));
    EXPECT_TRUE(test::all_close(mean, f.get("ln_mean"), 1e-12, 1e-12));
    EXPECT_TRUE(test::all_close(rstd, f.get("ln_rstd"), 1e-12, 1e-12));
    EXPECT_TRUE(test::all_close(dx, plus(f.get("ln_dx"), 1), 1e-12, 1e-12));
    EXPECT_TRUE(test::all_close(dw, plus(f.get("ln_dw"), 1), 1e-12, 1e-12));
    EXPECT_TRUE(test::all_close(db, plus(f.get("ln_db"), 1), 1e-12, 1e-12));

    const auto xf = test::to_f32(x), wf = test::to_f32(w), bf = test::to_f32(b);
    std::vector<float> yf(x.size()), meanf(static_cast<size_t>(N)), rstdf(static_cast<size_t>(N));
    std::vector<float> dxf(x.size(), 1.0f), dwf(w.size(), 1.0f), dbf(b.size(), 1.0f);
    kernels::layernorm_forward(yf.data(), meanf.data(), rstdf.data(), xf.data(), wf.data(),
                               bf.data(), N, C, float(eps));
    kernels::layernorm_backward(dxf.data(), dwf.data(), dbf.data(), test::to_f32(dy).data(),
                                xf.data(), wf.data(), meanf.data(), rstdf.data(), N, C);
    EXPECT_TRUE(test::all_close(yf, f.get("ln_y"), f32_atol, 8 * kEps));
    // The mean of row 1 is ~0.02 from unit-size inputs: its error is relative to the inputs.
    EXPECT_TRUE(test::all_close(meanf, f.get("ln_mean"), kEps, kEps));
    EXPECT_TRUE(test::all_close(rstdf, f.get("ln_rstd"), 0, f32_atol));
    EXPECT_TRUE(test::all_close(dxf, plus(f.get("ln_dx"), 1), f32_atol, 8 * kEps));
    EXPECT_TRUE(test::all_close(dwf, plus(f.get("ln_dw"), 1), f32_atol, 8 * kEps));
    EXPECT_TRUE(test::all_close(dbf, plus(f.get("ln_db"), 1), f32_atol, 8 * kEps));
}

TEST_F(NormsFixture, RmsNormMatchesPyTorch) {
    std::vector<double> y(x.size()), rstd(static_cast<size_t>(N)), dx(x.size(), 1.0),
        dw(w.size(), 1.0);
    kernels::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    kernels::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N,
                              C);
    EXPECT_TRUE(test::all_close(y, f.get("rms_y"), 1e-12, 1e-12));
    EXPECT_TRUE(test::all_close(rstd, f.get("rms_rstd"), 1e-12, 1e-12));
    EXPECT_TRUE(test::all_close(dx, plus(f.get("rms_dx"), 1), 1e-12, 1e-12));
    EXPECT_TRUE(test::all_close(dw, plus(f.get("rms_dw"), 1), 1e-12, 1e-12));

    const auto xf = test::to_f32(x), wf = test::to_f32(w);
    std::vector<float> yf(x.size()), rstdf(static_cast<size_t>(N)), dxf(x.size(), 1.0f),
        dwf(w.size(), 1.0f);
    kernels::rmsnorm_forward(yf.data(), rstdf.data(), xf.data(), wf.data(), N, C, float(eps));
    kernels::rmsnorm_backward(dxf.data(), dwf.data(), test::to_f32(dy).data(), xf.data(), wf.data(),
                              rstdf.data(), N, C);
    // No mean is subtracted: relative rounding only, ~unit-size values except row 0 (~50).
    EXPECT_TRUE(test::all_close(yf, f.get("rms_y"), 8 * kEps, 8 * kEps));
    EXPECT_TRUE(test::all_close(rstdf, f.get("rms_rstd"), 0, 4 * kEps));
    EXPECT_TRUE(test::all_close(dxf, plus(f.get("rms_dx"), 1), 8 * kEps, 8 * kEps));
    EXPECT_TRUE(test::all_close(dwf, plus(f.get("rms_dw"), 1), f32_atol, 8 * kEps));
}

TEST(LayerNorm, NullBiasMeansZeroBias) {
    const int64_t N = 5, C = 9;
    const auto x = test::random_normal_f32(size_t(N * C), 31);
    const auto w = test::random_normal_f32(size_t(C), 32);
    const auto dy = test::random_normal_f32(x.size(), 33);
    const std::vector<float> zero(size_t(C), 0.0f);
    std::vector<float> y0(x.size()), y1(x.size()), mean(static_cast<size_t>(N)),
        rstd(static_cast<size_t>(N));
    kernels::layernorm_forward(y0.data(), mean.data(), rstd.data(), x.data(), w.data(), zero.data(),
                               N, C, 1e-5f);
    kernels::layernorm_forward(y1.data(), mean.data(), rstd.data(), x.data(), w.data(), nullptr, N,
                               C, 1e-5f);
    EXPECT_EQ(y0, y1);
    std::vector<float> dx0(x.size()), dx1(x.size()), dw0(static_cast<size_t>(C)),
        dw1(static_cast<size_t>(C)), db(static_cast<size_t>(C));
    kernels::layernorm_backward(dx0.data(), dw0.data(), db.data(), dy.data(), x.data(), w.data(),
                                mean.data(), rstd.data(), N, C);
    kernels::layernorm_backward(dx1.data(), dw1.data(), nullptr, dy.data(), x.data(), w.data(),
                                mean.data(), rstd.data(), N, C);
    EXPECT_EQ(dx0, dx1);
    EXPECT_EQ(dw0, dw1);
}

TEST(Norms, ParameterGradientsAreIdenticalRunToRun) {
    // 64 x 1000 is past the parallel threshold: d_weight is summed over row blocks.
    const int64_t N = 64, C = 1000;
    const auto x = test::random_normal_f32(size_t(N * C), 34);
    const auto w = test::random_normal_f32(size_t(C), 35);
    const auto dy = test::random_normal_f32(x.size(), 36);
    std::vector<float> out(x.size()), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
    kernels::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), w.data(),
                               N, C, 1e-5f);
    std::vector<float> dx[2], dw[2], db[2];
    for (int run = 0; run < 2; ++run) {
        dx[run].assign(x.size(), 0.0f), dw[run].assign(size_t(C), 0.0f);
        db[run].assign(size_t(C), 0.0f);
        kernels::layernorm_backward(dx[run].data(), dw[run].data(), db[run].data(), dy.data(),
                                    x.data(), w.data(), mean.data(), rstd.data(), N, C);
        kernels::rmsnorm_backward(dx[run].data(), dw[run].data(), dy.data(), x.data(), w.data(),
                                  rstd.data(), N, C);
    }
    EXPECT_EQ(dx[0], dx[1]);
    EXPECT_EQ(dw[0], dw[1]);
    EXPECT_EQ(db[0], db[1]);
}

TEST(Norms, RejectsBadSizes) {
    std::vector<float> v(4);
    EXPECT_THROW(kernels::rmsnorm_forward(v.data(), v.data(), v.data(), v.data(), 4, 0, 1e-5f),
                 Error);
    EXPECT_THROW(kernels::layernorm_backward(v.data(), v.data(), v.data(), v.data(), v.data(),
                                             v.data(), v.data(), v.data(), -1, 4),
                 Error);
}

}  // namespace
}  // namespace moe
