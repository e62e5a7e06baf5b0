// The fused LayerNorm + GELU (kernels/layernorm_gelu.h): the vectorised float path against the
// unfused reference composition over the stem's channel counts and awkward ones, odd pixel
// counts and misaligned pointers; forward bit for bit equal to the unfused optimised kernels;
// backward by finite differences in double; in-place backward; parameter gradients identical
// run to run and for any thread count.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/threads.h"
#include "kernels/activations.h"
#include "kernels/layernorm_gelu.h"
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

float max_abs(const std::vector<float>& v) {
    float m = 0.0f;
    for (float x : v) m = std::max(m, std::fabs(x));
    return m;
}

// N pixels of C channels; inputs are scale * N(0, 1) + offset (a conv output's channels share
// an offset: the two-pass variance must not cancel).
struct Case {
    int64_t N, C;
    float scale, offset;
};

class LayerNormGeluSweep : public ::testing::TestWithParam<Case> {};

TEST_P(LayerNormGeluSweep, MatchesTheUnfusedReference) {
    const auto [N, C, scale, offset] = GetParam();
    auto x = test::random_normal_f32(size_t(N * C), 1, scale);
    for (float& v : x) v += offset;
    const auto w = test::random_normal_f32(size_t(C), 2);
    const auto b = test::random_normal_f32(size_t(C), 3);
    const auto dy = test::random_normal_f32(x.size(), 4);
    const auto dw0 = test::random_normal_f32(w.size(), 5);
    const auto db0 = test::random_normal_f32(w.size(), 6);
    const float eps = 1e-5f;

    Misaligned xm(x), wm(w), bm(b), out(std::vector<float>(x.size()));
    Misaligned grad(std::vector<float>(x.size()));
    Misaligned mean{std::vector<float>(static_cast<size_t>(N))};
    Misaligned rstd{std::vector<float>(static_cast<size_t>(N))};
    std::vector<float> out_ref(x.size()), grad_ref(x.size()), mean_ref(static_cast<size_t>(N)),
        rstd_ref(static_cast<size_t>(N));
    kernels::layernorm_gelu_forward(out.data(), grad.data(), mean.data(), rstd.data(), xm.data(),
                                    wm.data(), bm.data(), N, C, eps);
    kernels::layernorm_gelu_forward_reference(out_ref.data(), grad_ref.data(), mean_ref.data(),
                                              rstd_ref.data(), x.data(), w.data(), b.data(), N, C,
                                              eps);
    // mean carries the offset's rounding; rstd = 316 for C = 1 (zero variance).
    EXPECT_TRUE(test::all_close(mean.values(), mean_ref, kEps * (scale + std::fabs(offset)), kEps));
    EXPECT_TRUE(test::all_close(rstd.values(), rstd_ref, 0, 4 * kEps));
    // y = xhat * w + b carries a few ulp of its largest term (|xhat| <= sqrt(C), and x - mean
    // carries offset * eps / 2 times rstd); GELU adds ~4 ulp and its slope is <= 1.13.
    const float max_rstd = *std::max_element(rstd_ref.begin(), rstd_ref.end());
    const double y_mag = std::sqrt(double(C)) * max_abs(w) + max_abs(b) +
                         std::fabs(double(offset)) * max_rstd * max_abs(w);
    EXPECT_TRUE(test::all_close(out.values(), out_ref, 8 * kEps * y_mag, 8 * kEps));
    // gelu'' = 2 phi - y^2 phi is at most 0.8 in size.
    EXPECT_TRUE(test::all_close(grad.values(), grad_ref, 8 * kEps * y_mag, 8 * kEps));

    // Backward from the reference's saved arrays, so both see the same y.
    Misaligned dym(dy), dx(std::vector<float>(x.size(), 123.0f)), dw(dw0), db(db0);
    Misaligned meanm(mean_ref), rstdm(rstd_ref), gradm(grad_ref);
    std::vector<float> dx_ref(x.size(), -7.0f);
    auto dw_ref = dw0, db_ref = db0;
    kernels::layernorm_gelu_backward(dx.data(), dw.data(), db.data(), dym.data(), gradm.data(),
                                     xm.data(), wm.data(), meanm.data(), rstdm.data(), N, C);
    kernels::layernorm_gelu_backward_reference(dx_ref.data(), dw_ref.data(), db_ref.data(),
                                               dy.data(), grad_ref.data(), x.data(), w.data(),
                                               mean_ref.data(), rstd_ref.data(), N, C);
    // d_in = rstd * (g - mean(g) - xhat mean(g xhat)), g = dy * gelu'(y) * w: rstd scales
    // the error (316 for C = 1), and xhat carries the offset's rounding as y does.
    const double dx_atol = 16 * kEps * max_rstd * max_abs(w) * y_mag;
    EXPECT_TRUE(test::all_close(dx.values(), dx_ref, dx_atol, 16 * kEps));
    // d_weight and d_bias sum N terms of size ~|xhat| and ~1: rounding grows with N.
    EXPECT_TRUE(test::all_close(dw.values(), dw_ref, 8 * kEps * double(N) * y_mag, 8 * kEps));
    EXPECT_TRUE(test::all_close(db.values(), db_ref, 8 * kEps * double(N) * y_mag, 8 * kEps));
}

std::vector<Case> sweep() {
    std::vector<Case> v;
    // 1031 rows of 32 or more pass the parallel threshold (32k elements) and span several
    // gradient blocks (256 rows each) with a ragged last one.
    for (int64_t C : {1, 3, 16, 17, 32, 64, 100})
        for (int64_t N : {1, 7, 257, 1031}) v.push_back({N, C, 1.0f, 0.0f});
    v.push_back({33, 32, 3.0f, 50.0f});
    v.push_back({33, 64, 0.01f, -4.0f});
    return v;
}

INSTANTIATE_TEST_SUITE_P(Channels, LayerNormGeluSweep, ::testing::ValuesIn(sweep()));

TEST(LayerNormGelu, ForwardIsBitwiseTheUnfusedKernels) {
    // The same float expression for y and the same Phi and phi: fusing changes no bit of the
    // output, and the saved slope is what gelu_backward computes for d_out = 1.
    for (int64_t C : {3, 32, 64}) {
        const int64_t N = 1500;  // past the parallel threshold for C >= 32
        const auto x = test::random_normal_f32(size_t(N * C), 11, 2.0f);
        const auto w = test::random_normal_f32(size_t(C), 12);
        const auto b = test::random_normal_f32(size_t(C), 13);
        std::vector<float> out(x.size()), grad(x.size()), mean(static_cast<size_t>(N)),
            rstd(static_cast<size_t>(N));
        std::vector<float> y(x.size()), out1(x.size()), grad1(x.size(), 0.0f), ones(x.size(), 1.0f),
            mean1(static_cast<size_t>(N)), rstd1(static_cast<size_t>(N));
        kernels::layernorm_gelu_forward(out.data(), grad.data(), mean.data(), rstd.data(), x.data(),
                                        w.data(), b.data(), N, C, 1e-5f);
        kernels::layernorm_forward(y.data(), mean1.data(), rstd1.data(), x.data(), w.data(),
                                   b.data(), N, C, 1e-5f);
        kernels::gelu_forward(out1.data(), y.data(), N * C);
        kernels::gelu_backward(grad1.data(), ones.data(), y.data(), N * C);
        EXPECT_EQ(out, out1) << C;
        EXPECT_EQ(grad, grad1) << C;
        EXPECT_EQ(mean, mean1) << C;
        EXPECT_EQ(rstd, rstd1) << C;
    }
}

TEST(LayerNormGelu, BackwardMatchesFiniteDifferences) {
    const int64_t N = 3, C = 5;
    const double eps = 1e-5;
    auto x = test::random_normal(size_t(N * C), 21);
    auto w = test::random_normal(size_t(C), 22);
    auto b = test::random_normal(size_t(C), 23);
    const auto wts = test::random_normal(x.size(), 24);  // d loss / d out
    std::vector<double> out(x.size()), grad(x.size()), mean(static_cast<size_t>(N)),
        rstd(static_cast<size_t>(N));
    auto loss = [&] {
        kernels::layernorm_gelu_forward(out.data(), grad.data(), mean.data(), rstd.data(), x.data(),
                                        w.data(), b.data(), N, C, eps);
        return test::weighted_sum(out, wts);
    };
    const auto num_dx = test::numeric_gradient(loss, x.data(), x.size());
    const auto num_dw = test::numeric_gradient(loss, w.data(), w.size());
    const auto num_db = test::numeric_gradient(loss, b.data(), b.size());
    loss();
    std::vector<double> dx(x.size(), 99.0), dw(w.size(), 0.0), db(b.size(), 0.0);
    kernels::layernorm_gelu_backward(dx.data(), dw.data(), db.data(), wts.data(), grad.data(),
                                     x.data(), w.data(), mean.data(), rstd.data(), N, C);
    EXPECT_TRUE(test::all_close(dx, num_dx, 1e-8, 1e-6));  // written: the 99s are gone
    EXPECT_TRUE(test::all_close(dw, num_dw, 1e-8, 1e-6));
    EXPECT_TRUE(test::all_close(db, num_db, 1e-8, 1e-6));
}

// Forward at N x C, then backward into fresh gradients: (d_in, d_weight, d_bias).
struct Grads {
    std::vector<float> dx, dw, db;
};
Grads run_backward(int64_t N, int64_t C, bool in_place) {
    const auto x = test::random_normal_f32(size_t(N * C), 31);
    const auto w = test::random_normal_f32(size_t(C), 32);
    const auto b = test::random_normal_f32(size_t(C), 33);
    const auto dy = test::random_normal_f32(x.size(), 34);
    std::vector<float> out(x.size()), grad(x.size()), mean(static_cast<size_t>(N)),
        rstd(static_cast<size_t>(N));
    kernels::layernorm_gelu_forward(out.data(), grad.data(), mean.data(), rstd.data(), x.data(),
                                    w.data(), b.data(), N, C, 1e-5f);
    Grads g{in_place ? dy : std::vector<float>(x.size()), std::vector<float>(size_t(C), 0.5f),
            std::vector<float>(size_t(C), -0.5f)};
    kernels::layernorm_gelu_backward(g.dx.data(), g.dw.data(), g.db.data(),
                                     in_place ? g.dx.data() : dy.data(), grad.data(), x.data(),
                                     w.data(), mean.data(), rstd.data(), N, C);
    return g;
}

TEST(LayerNormGelu, InPlaceBackwardEqualsOutOfPlace) {
    for (int64_t C : {1, 17, 64}) {
        const Grads a = run_backward(777, C, false), p = run_backward(777, C, true);
        EXPECT_EQ(a.dx, p.dx) << C;
        EXPECT_EQ(a.dw, p.dw) << C;
        EXPECT_EQ(a.db, p.db) << C;
    }
}

TEST(LayerNormGelu, ParameterGradientsAreIdenticalRunToRunAndForAnyThreadCount) {
    // 5000 x 32 is past the parallel threshold and spans 20 gradient blocks.
    const int64_t N = 5000, C = 32;
    const Grads first = run_backward(N, C, true);
    const Grads again = run_backward(N, C, true);
    EXPECT_EQ(first.dx, again.dx);
    EXPECT_EQ(first.dw, again.dw);
    EXPECT_EQ(first.db, again.db);
    const int threads = num_threads();
    set_num_threads(1);
    const Grads one = run_backward(N, C, true);
    set_num_threads(3);
    const Grads three = run_backward(N, C, true);
    set_num_threads(threads);
    EXPECT_EQ(first.dw, one.dw);
    EXPECT_EQ(first.db, one.db);
    EXPECT_EQ(first.dw, three.dw);
    EXPECT_EQ(first.db, three.db);
    EXPECT_EQ(first.dx, three.dx);
}

TEST(LayerNormGelu, RejectsBadArguments) {
    std::vector<float> v(8), s(2);
    EXPECT_THROW(kernels::layernorm_gelu_forward(v.data(), v.data(), s.data(), s.data(), v.data(),
                                                 v.data(), v.data(), 2, 0, 1e-5f),
                 Error);
    EXPECT_THROW(kernels::layernorm_gelu_forward(v.data(), v.data(), s.data(), s.data(), v.data(),
                                                 v.data(), nullptr, 2, 4, 1e-5f),
                 Error);
    EXPECT_THROW(kernels::layernorm_gelu_backward(v.data(), v.data(), nullptr, v.data(), v.data(),
                                                  v.data(), v.data(), s.data(), s.data(), 2, 4),
                 Error);
}

}  // namespace
}  // namespace moe
