// Activations (SiLU, exact GELU, SwiGLU gate): the vectorised float path against the
// reference on awkward sizes and misaligned pointers, every backward by finite differences
// in double, and forward + backward against PyTorch's silu and gelu(approximate='none').
#include <cmath>
#include <limits>

#include "kernels/activations.h"
#include "test_support.h"

namespace moe {
namespace {

constexpr double kEpsF = std::numeric_limits<float>::epsilon();

// Per-element check: |got - want| <= k * eps_f * scale[i], where scale[i] is the sum of the
// magnitudes of the terms that make up want[i] (so a gradient that crosses zero by
// cancellation gets the absolute tolerance its terms deserve, and nothing looser).
::testing::AssertionResult close_scaled(const float* got, const std::vector<double>& want,
                                        const std::vector<double>& scale, double k) {
    size_t failures = 0, worst = 0;
    double worst_ratio = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        const double tol = k * kEpsF * scale[i] + 1e-37;  // 1e-37: float's denormal floor
        const double err = std::fabs(double(got[i]) - want[i]);
        const double ratio = std::isnan(err) ? INFINITY : err / tol;
        if (!(err <= tol)) ++failures;
        if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
    }
    if (failures == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << failures << " of " << want.size() << " differ beyond " << k
           << " eps * scale; worst at [" << worst << "]: " << got[worst] << " vs " << want[worst]
           << " (" << worst_ratio << " x tolerance)";
}

// normal(0, 4), with the tails and the special points planted at the front: saturation
// (+-30), the far GELU tail (-13: Phi = 6e-39), where GELU' = 0 (-0.7518) and 0.
std::vector<float> activation_inputs(size_t n, uint64_t seed) {
    auto x = test::random_normal_f32(n, seed, 4.0f);
    const float special[] = {-30.0f, 30.0f, -13.0f, 13.0f, -9.0f, -0.7518f, 0.0f, -1.2785f};
    for (size_t i = 0; i < n && i < std::size(special); ++i) x[i] = special[i];
    return x;
}

std::vector<double> f64(const float* p, size_t n) {
    return {p, p + n};
}

class ActivationSweep : public ::testing::TestWithParam<int64_t> {};

// Every float kernel against the reference evaluated in double on the same float inputs,
// from misaligned starting points (offsets of 1 and 3 floats). The backward starts from a
// random dx, so the += is checked as well. The tolerances are about twice the worst error
// measured over these inputs (1.3 to 4.2 eps * scale).
TEST_P(ActivationSweep, FloatPathMatchesReference) {
    const int64_t n = GetParam();
    for (int64_t offset : {0, 1, 3}) {
        SCOPED_TRACE(::testing::Message() << "n=" << n << " offset=" << offset);
        const size_t len = size_t(n + offset);
        auto xs = activation_inputs(len, 11);
        auto bs = test::random_normal_f32(len, 12);
        auto dys = test::random_normal_f32(len, 13);
        auto d0s = test::random_normal_f32(len, 14);
        const float *x = xs.data() + offset, *b = bs.data() + offset, *dy = dys.data() + offset;
        const auto xd = f64(x, size_t(n)), bd = f64(b, size_t(n)), dyd = f64(dy, size_t(n));
        const auto d0d = f64(d0s.data() + offset, size_t(n));

        std::vector<float> ybuf(len), dabuf = d0s, dbbuf = d0s;
        float *y = ybuf.data() + offset, *da = dabuf.data() + offset, *db = dbbuf.data() + offset;
        const size_t un = static_cast<size_t>(n);
        std::vector<double> want(un), want2(un), scale(un), scale2(un);

        // Term magnitudes for the tolerances, from the exact sigmoid and normal CDF/PDF.
        auto sig = [](double v) { return 1 / (1 + std::exp(-v)); };
        auto cdf = [](double v) { return 0.5 * std::erfc(-v / std::sqrt(2.0)); };
        auto pdf = [](double v) { return std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI); };

        // SiLU forward: within 4 ulp of the exact value.
        kernels::silu_forward(y, x, n);
        kernels::silu_forward_reference(want.data(), xd.data(), n);
        for (int64_t i = 0; i < n; ++i) scale[i] = std::fabs(want[i]);
        EXPECT_TRUE(close_scaled(y, want, scale, 4)) << "silu_forward";

        // SiLU backward.
        want = d0d;
        kernels::silu_backward(da, dy, x, n);
        kernels::silu_backward_reference(want.data(), dyd.data(), xd.data(), n);
        for (int64_t i = 0; i < n; ++i) {
            const double s = sig(xd[i]);
            scale[i] = std::fabs(d0d[i]) + std::fabs(dyd[i]) * (s + std::fabs(xd[i] * s * (1 - s)));
        }
        EXPECT_TRUE(close_scaled(da, want, scale, 4)) << "silu_backward";

        // GELU forward: within 8 ulp, all the way into the erfc tail.
        kernels::gelu_forward(y, x, n);
        kernels::gelu_forward_reference(want.data(), xd.data(), n);
        for (int64_t i = 0; i < n; ++i) scale[i] = std::fabs(want[i]);
        EXPECT_TRUE(close_scaled(y, want, scale, 8)) << "gelu_forward";

        // GELU backward.
        dabuf = d0s;
        want = d0d;
        kernels::gelu_backward(da, dy, x, n);
        kernels::gelu_backward_reference(want.data(), dyd.data(), xd.data(), n);
        for (int64_t i = 0; i < n; ++i)
            scale[i] = std::fabs(d0d[i]) +
                       std::fabs(dyd[i]) * (cdf(xd[i]) + std::fabs(xd[i]) * pdf(xd[i]));
        EXPECT_TRUE(close_scaled(da, want, scale, 6)) << "gelu_backward";

        // SwiGLU forward, with a = x.
        kernels::swiglu_forward(y, x, b, n);
        kernels::swiglu_forward_reference(want.data(), xd.data(), bd.data(), n);
        for (int64_t i = 0; i < n; ++i) scale[i] = std::fabs(want[i]);
        EXPECT_TRUE(close_scaled(y, want, scale, 4)) << "swiglu_forward";

        // SwiGLU backward.
        dabuf = d0s;
        dbbuf = d0s;
        want = d0d;
        want2 = d0d;
        kernels::swiglu_backward(da, db, dy, x, b, n);
        kernels::swiglu_backward_reference(want.data(), want2.data(), dyd.data(), xd.data(),
                                           bd.data(), n);
        for (int64_t i = 0; i < n; ++i) {
            const double s = sig(xd[i]);
            scale[i] = std::fabs(d0d[i]) +
                       std::fabs(dyd[i] * bd[i]) * (s + std::fabs(xd[i] * s * (1 - s)));
            scale2[i] = std::fabs(d0d[i]) + std::fabs(dyd[i] * xd[i] * s);
        }
        EXPECT_TRUE(close_scaled(da, want, scale, 4)) << "swiglu_backward da";
        EXPECT_TRUE(close_scaled(db, want2, scale2, 4)) << "swiglu_backward db";

        // Nothing outside [offset, offset + n) was written.
        for (int64_t i = 0; i < offset; ++i) EXPECT_EQ(ybuf[size_t(i)], 0.0f);
    }
}

// 100000 is above the OpenMP threshold (32768), so the chunked parallel loop is covered.
INSTANTIATE_TEST_SUITE_P(AwkwardSizes, ActivationSweep,
                         ::testing::Values(1, 3, 7, 17, 64, 1000, 100000));

TEST(Activations, FloatReferenceAgreesWithDoubleReference) {
    // The float instantiation of the references is what other tests may compare against.
    const size_t n = 1000;
    auto x = test::random_normal_f32(n, 21, 3.0f);
    const auto xd = f64(x.data(), n);
    std::vector<float> y(n);
    std::vector<double> want(n);
    kernels::gelu_forward_reference(y.data(), x.data(), int64_t(n));
    kernels::gelu_forward_reference(want.data(), xd.data(), int64_t(n));
    EXPECT_TRUE(test::all_close(y, want, 1e-6, 1e-5));
    kernels::silu_forward_reference(y.data(), x.data(), int64_t(n));
    kernels::silu_forward_reference(want.data(), xd.data(), int64_t(n));
    EXPECT_TRUE(test::all_close(y, want, 1e-6, 1e-5));
}

TEST(Activations, DoubleOverloadsAreTheReference) {
    const size_t n = 50;
    auto x = test::random_normal(n, 31, 3.0), b = test::random_normal(n, 32);
    auto dy = test::random_normal(n, 33);
    std::vector<double> y(n), r(n), da(n), db(n), ra(n), rb(n);
    kernels::silu_forward(y.data(), x.data(), int64_t(n));
    kernels::silu_forward_reference(r.data(), x.data(), int64_t(n));
    EXPECT_EQ(y, r);
    kernels::gelu_forward(y.data(), x.data(), int64_t(n));
    kernels::gelu_forward_reference(r.data(), x.data(), int64_t(n));
    EXPECT_EQ(y, r);
    kernels::swiglu_forward(y.data(), x.data(), b.data(), int64_t(n));
    kernels::swiglu_forward_reference(r.data(), x.data(), b.data(), int64_t(n));
    EXPECT_EQ(y, r);
    kernels::swiglu_backward(da.data(), db.data(), dy.data(), x.data(), b.data(), int64_t(n));
    kernels::swiglu_backward_reference(ra.data(), rb.data(), dy.data(), x.data(), b.data(),
                                       int64_t(n));
    EXPECT_EQ(da, ra);
    EXPECT_EQ(db, rb);
}

// ---- finite differences (double) ----

class ActivationGradient : public ::testing::Test {
  protected:
    const size_t n = 41;
    std::vector<double> x = test::random_normal(n, 41, 2.5);
    std::vector<double> b = test::random_normal(n, 42);
    std::vector<double> w = test::random_normal(n, 43);  // the loss weights = dy
};

TEST_F(ActivationGradient, SiluBackwardMatchesFiniteDifferences) {
    std::vector<double> y(n);
    auto loss = [&] {
        kernels::silu_forward(y.data(), x.data(), int64_t(n));
        return test::weighted_sum(y, w);
    };
    const auto numeric = test::numeric_gradient(loss, x.data(), n);
    std::vector<double> dx(n, 0.0);
    kernels::silu_backward(dx.data(), w.data(), x.data(), int64_t(n));
    EXPECT_TRUE(test::all_close(dx, numeric, 1e-8, 1e-7));
}

TEST_F(ActivationGradient, GeluBackwardMatchesFiniteDifferences) {
    std::vector<double> y(n);
    auto loss = [&] {
        kernels::gelu_forward(y.data(), x.data(), int64_t(n));
        return test::weighted_sum(y, w);
    };
    const auto numeric = test::numeric_gradient(loss, x.data(), n);
    std::vector<double> dx(n, 0.0);
    kernels::gelu_backward(dx.data(), w.data(), x.data(), int64_t(n));
    EXPECT_TRUE(test::all_close(dx, numeric, 1e-8, 1e-7));
}

TEST_F(ActivationGradient, SwigluBackwardMatchesFiniteDifferences) {
    std::vector<double> y(n);
    auto loss = [&] {
        kernels::swiglu_forward(y.data(), x.data(), b.data(), int64_t(n));
        return test::weighted_sum(y, w);
    };
    const auto numeric_a = test::numeric_gradient(loss, x.data(), n);
    const auto numeric_b = test::numeric_gradient(loss, b.data(), n);
    std::vector<double> da(n, 0.0), db(n, 0.0);
    kernels::swiglu_backward(da.data(), db.data(), w.data(), x.data(), b.data(), int64_t(n));
    EXPECT_TRUE(test::all_close(da, numeric_a, 1e-8, 1e-7));
    EXPECT_TRUE(test::all_close(db, numeric_b, 1e-8, 1e-7));
}

TEST(Activations, BackwardAccumulates) {
    // Called twice from zero, every backward gives exactly twice its gradient (v + v = 2v).
    const size_t n = 1000;
    auto x = test::random_normal_f32(n, 51, 3.0f), b = test::random_normal_f32(n, 52);
    auto dy = test::random_normal_f32(n, 53);
    auto twice = [&](auto&& backward) {
        std::vector<float> once(n, 0.0f), two(n, 0.0f);
        backward(once.data());
        backward(two.data());
        backward(two.data());
        for (auto& v : once) v *= 2;
        return std::make_pair(two, once);
    };
    auto [s2, s1] = twice([&](float* d) { kernels::silu_backward(d, dy.data(), x.data(), n); });
    EXPECT_EQ(s2, s1);
    auto [g2, g1] = twice([&](float* d) { kernels::gelu_backward(d, dy.data(), x.data(), n); });
    EXPECT_EQ(g2, g1);
    std::vector<float> sink(n);
    auto [a2, a1] = twice([&](float* d) {
        kernels::swiglu_backward(d, sink.data(), dy.data(), x.data(), b.data(), n);
    });
    EXPECT_EQ(a2, a1);
    auto [b2, b1] = twice([&](float* d) {
        kernels::swiglu_backward(sink.data(), d, dy.data(), x.data(), b.data(), n);
    });
    EXPECT_EQ(b2, b1);
    // And the double path.
    auto xd = test::to_f64(x), dyd = test::to_f64(dy);
    std::vector<double> once(n, 0.0), two(n, 0.0);
    kernels::gelu_backward(once.data(), dyd.data(), xd.data(), int64_t(n));
    kernels::gelu_backward(two.data(), dyd.data(), xd.data(), int64_t(n));
    kernels::gelu_backward(two.data(), dyd.data(), xd.data(), int64_t(n));
    for (auto& v : once) v *= 2;
    EXPECT_EQ(two, once);
}

TEST(Activations, SaturatedAndInfiniteInputs) {
    const std::vector<float> x = {-1000.0f, -100.0f, 100.0f, 1000.0f, INFINITY};
    std::vector<float> y(x.size());
    kernels::silu_forward(y.data(), x.data(), int64_t(x.size()));
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_EQ(y[1], 0.0f);
    EXPECT_EQ(y[2], 100.0f);
    EXPECT_EQ(y[3], 1000.0f);
    EXPECT_EQ(y[4], INFINITY);
    kernels::gelu_forward(y.data(), x.data(), int64_t(x.size()));
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_EQ(y[1], 0.0f);
    EXPECT_EQ(y[2], 100.0f);
    EXPECT_EQ(y[3], 1000.0f);
    EXPECT_EQ(y[4], INFINITY);
    std::vector<float> dx(x.size() - 1, 0.0f), ones(x.size() - 1, 1.0f);
    kernels::gelu_backward(dx.data(), ones.data(), x.data(), int64_t(dx.size()));
    EXPECT_EQ(dx, (std::vector<float>{0, 0, 1, 1}));
    std::fill(dx.begin(), dx.end(), 0.0f);
    kernels::silu_backward(dx.data(), ones.data(), x.data(), int64_t(dx.size()));
    EXPECT_EQ(dx, (std::vector<float>{0, 0, 1, 1}));
    // NaN propagates.
    const float nan_in = NAN;
    float out = 0;
    kernels::gelu_forward(&out, &nan_in, 1);
    EXPECT_TRUE(std::isnan(out));
    kernels::silu_forward(&out, &nan_in, 1);
    EXPECT_TRUE(std::isnan(out));
}

// ---- PyTorch ----

class ActivationFixture : public ::testing::Test {
  protected:
    test::Fixture fx{"activations"};
    std::vector<double> x = fx.get("x"), dy = fx.get("dy"), a = fx.get("a"), b = fx.get("b");
    int64_t n = int64_t(x.size());
};

TEST_F(ActivationFixture, DoubleMatchesTorch) {
    std::vector<double> y(x.size()), dx(x.size(), 0.0), db(x.size(), 0.0);
    kernels::silu_forward(y.data(), x.data(), n);
    EXPECT_TRUE(test::all_close(y, fx.get("silu_y"), 1e-14, 1e-12));
    kernels::silu_backward(dx.data(), dy.data(), x.data(), n);
    EXPECT_TRUE(test::all_close(dx, fx.get("silu_dx"), 1e-14, 1e-12));

    kernels::gelu_forward(y.data(), x.data(), n);
    EXPECT_TRUE(test::all_close(y, fx.get("gelu_y"), 1e-14, 1e-12));
    std::fill(dx.begin(), dx.end(), 0.0);
    kernels::gelu_backward(dx.data(), dy.data(), x.data(), n);
    EXPECT_TRUE(test::all_close(dx, fx.get("gelu_dx"), 1e-14, 1e-12));

    kernels::swiglu_forward(y.data(), a.data(), b.data(), n);
    EXPECT_TRUE(test::all_close(y, fx.get("swiglu_y"), 1e-14, 1e-12));
    std::fill(dx.begin(), dx.end(), 0.0);
    kernels::swiglu_backward(dx.data(), db.data(), dy.data(), a.data(), b.data(), n);
    EXPECT_TRUE(test::all_close(dx, fx.get("swiglu_da"), 1e-14, 1e-12));
    EXPECT_TRUE(test::all_close(db, fx.get("swiglu_db"), 1e-14, 1e-12));
}

TEST_F(ActivationFixture, FloatMatchesTorch) {
    // Inputs rounded to float move the outputs by ~|x f'(x)/f(x)| ulp: ~100 ulp relative
    // in the GELU tail (x = -10, y = -8e-23) and unbounded where a gradient crosses zero,
    // but never more than 2e-8 absolute here: hence the absolute floor of 1 eps (1.2e-7).
    const auto xf = test::to_f32(x), dyf = test::to_f32(dy), af = test::to_f32(a),
               bf = test::to_f32(b);
    const double atol = kEpsF, rtol = 16 * kEpsF;
    std::vector<float> y(x.size()), dx(x.size(), 0.0f), db(x.size(), 0.0f);
    kernels::silu_forward(y.data(), xf.data(), n);
    EXPECT_TRUE(test::all_close(y, fx.get("silu_y"), atol, rtol));
    kernels::silu_backward(dx.data(), dyf.data(), xf.data(), n);
    EXPECT_TRUE(test::all_close(dx, fx.get("silu_dx"), atol, rtol));

    kernels::gelu_forward(y.data(), xf.data(), n);
    EXPECT_TRUE(test::all_close(y, fx.get("gelu_y"), atol, rtol));
    std::fill(dx.begin(), dx.end(), 0.0f);
    kernels::gelu_backward(dx.data(), dyf.data(), xf.data(), n);
    EXPECT_TRUE(test::all_close(dx, fx.get("gelu_dx"), atol, rtol));

    kernels::swiglu_forward(y.data(), af.data(), bf.data(), n);
    EXPECT_TRUE(test::all_close(y, fx.get("swiglu_y"), atol, rtol));
    std::fill(dx.begin(), dx.end(), 0.0f);
    kernels::swiglu_backward(dx.data(), db.data(), dyf.data(), af.data(), bf.data(), n);
    EXPECT_TRUE(test::all_close(dx, fx.get("swiglu_da"), atol, rtol));
    EXPECT_TRUE(test::all_close(db, fx.get("swiglu_db"), atol, rtol));
}

}  // namespace
}  // namespace moe
