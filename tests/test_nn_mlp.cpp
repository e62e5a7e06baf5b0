// MLPs (SwiGLU and GELU): every gradient by finite differences in double (GELU with and
// without biases, with the nullable d_in / d_b1 / d_b2), forward + backward against PyTorch
// in double and on the float path, the saved activations, that the backward accumulates,
// and that the scratch is only written, never read.
#include <cmath>
#include <limits>
#include <string>

#include "nn/mlp.h"
#include "test_support.h"

namespace moe {
namespace {

constexpr double kEpsF = std::numeric_limits<float>::epsilon();

// ---- SwiGLU ----

class SwigluMlpGradient : public ::testing::Test {
  protected:
    const int64_t N = 3, C = 4, H = 5;
    std::vector<double> in = test::random_normal(size_t(N * C), 1);
    std::vector<double> w1 = test::random_normal(size_t(H * C), 2, 0.7);
    std::vector<double> w3 = test::random_normal(size_t(H * C), 3, 0.7);
    std::vector<double> w2 = test::random_normal(size_t(C * H), 4, 0.5);
    std::vector<double> w = test::random_normal(size_t(N * C), 5);  // loss weights = d_out
    std::vector<double> out = std::vector<double>(size_t(N * C));
    std::vector<double> h1 = std::vector<double>(size_t(N * H)), h3 = h1, act = h1;

    double loss() {
        nn::swiglu_mlp_forward(out.data(), h1.data(), h3.data(), act.data(), in.data(), w1.data(),
                               w3.data(), w2.data(), N, C, H);
        return test::weighted_sum(out, w);
    }
    // Runs the backward into the given gradients, with a NaN-filled scratch.
    void backward(double* d_in, double* d_w1, double* d_w3, double* d_w2) {
        loss();
        std::vector<double> scratch(size_t(3 * N * H), NAN);
        nn::swiglu_mlp_backward(d_in, d_w1, d_w3, d_w2, scratch.data(), w.data(), in.data(),
                                h1.data(), h3.data(), act.data(), w1.data(), w3.data(), w2.data(),
                                N, C, H);
    }
};

TEST_F(SwigluMlpGradient, MatchesFiniteDifferences) {
    auto L = [&] { return loss(); };
    const auto num_in = test::numeric_gradient(L, in.data(), in.size());
    const auto num_w1 = test::numeric_gradient(L, w1.data(), w1.size());
    const auto num_w3 = test::numeric_gradient(L, w3.data(), w3.size());
    const auto num_w2 = test::numeric_gradient(L, w2.data(), w2.size());
    std::vector<double> d_in(in.size(), 0.0), d_w1(w1.size(), 0.0), d_w3(w3.size(), 0.0),
        d_w2(w2.size(), 0.0);
    backward(d_in.data(), d_w1.data(), d_w3.data(), d_w2.data());
    EXPECT_TRUE(test::all_close(d_in, num_in, 1e-8, 1e-7));
    EXPECT_TRUE(test::all_close(d_w1, num_w1, 1e-8, 1e-7));
    EXPECT_TRUE(test::all_close(d_w3, num_w3, 1e-8, 1e-7));
    EXPECT_TRUE(test::all_close(d_w2, num_w2, 1e-8, 1e-7));
}

TEST_F(SwigluMlpGradient, SavesProjectionsAndGate) {
    loss();
    // h1[0, 0] = in[0, :] . w1[0, :], and act = silu(h1) * h3.
    double h = 0;
    for (int64_t c = 0; c < C; ++c) h += in[size_t(c)] * w1[size_t(c)];
    EXPECT_NEAR(h1[0], h, 1e-14);
    for (size_t i = 0; i < act.size(); ++i)
        EXPECT_NEAR(act[i], h1[i] / (1 + std::exp(-h1[i])) * h3[i], 1e-14);
}

TEST_F(SwigluMlpGradient, BackwardAccumulatesAndDInIsNullable) {
    std::vector<double> d_in(in.size(), 0.0), d_w1(w1.size(), 0.0), d_w3(w3.size(), 0.0),
        d_w2(w2.size(), 0.0);
    auto t_in = d_in, t_w1 = d_w1, t_w3 = d_w3, t_w2 = d_w2;
    backward(d_in.data(), d_w1.data(), d_w3.data(), d_w2.data());
    backward(t_in.data(), t_w1.data(), t_w3.data(), t_w2.data());
    backward(t_in.data(), t_w1.data(), t_w3.data(), t_w2.data());
    // Twice is twice once, up to rounding: d_in sums two paths into each element.
    auto doubled = [](std::vector<double> v) {
        for (auto& x : v) x *= 2;
        return v;
    };
    EXPECT_TRUE(test::all_close(t_in, doubled(d_in), 1e-14, 1e-13));
    EXPECT_TRUE(test::all_close(t_w1, doubled(d_w1), 1e-14, 1e-13));
    EXPECT_TRUE(test::all_close(t_w3, doubled(d_w3), 1e-14, 1e-13));
    EXPECT_TRUE(test::all_close(t_w2, doubled(d_w2), 1e-14, 1e-13));
    // d_in = null leaves the weight gradients as they were.
    std::vector<double> n_w1(w1.size(), 0.0), n_w3(w3.size(), 0.0), n_w2(w2.size(), 0.0);
    backward(nullptr, n_w1.data(), n_w3.data(), n_w2.data());
    EXPECT_EQ(n_w1, d_w1);
    EXPECT_EQ(n_w3, d_w3);
    EXPECT_EQ(n_w2, d_w2);
}

// ---- GELU ----

class GeluMlpGradient : public ::testing::Test {
  protected:
    const int64_t N = 3, C = 4, H = 5;
    std::vector<double> in = test::random_normal(size_t(N * C), 11);
    std::vector<double> w1 = test::random_normal(size_t(H * C), 12, 0.7);
    std::vector<double> b1 = test::random_normal(size_t(H), 13);
    std::vector<double> w2 = test::random_normal(size_t(C * H), 14, 0.5);
    std::vector<double> b2 = test::random_normal(size_t(C), 15);
    std::vector<double> w = test::random_normal(size_t(N * C), 16);
    std::vector<double> out = std::vector<double>(size_t(N * C));
    std::vector<double> h = std::vector<double>(size_t(N * H)), act = h;
    bool with_bias = true;
    bool relu = false;  // the ReLU MLP (same shapes and buffers) instead

    const double* B1() const { return with_bias ? b1.data() : nullptr; }
    const double* B2() const { return with_bias ? b2.data() : nullptr; }
    double loss() {
        (relu ? nn::relu_mlp_forward<double>
              : nn::gelu_mlp_forward<double>)(out.data(), h.data(), act.data(), in.data(),
                                              w1.data(), B1(), w2.data(), B2(), N, C, H);
        return test::weighted_sum(out, w);
    }
    void backward(double* d_in, double* d_w1, double* d_b1, double* d_w2, double* d_b2) {
        loss();
        std::vector<double> scratch(size_t(2 * N * H), NAN);
        (relu ? nn::relu_mlp_backward<double>
              : nn::gelu_mlp_backward<double>)(d_in, d_w1, d_b1, d_w2, d_b2, scratch.data(),
                                               w.data(), in.data(), h.data(), act.data(), w1.data(),
                                               w2.data(), N, C, H);
    }
    void check_finite_differences() {
        auto L = [&] { return loss(); };
        const auto num_in = test::numeric_gradient(L, in.data(), in.size());
        const auto num_w1 = test::numeric_gradient(L, w1.data(), w1.size());
        const auto num_w2 = test::numeric_gradient(L, w2.data(), w2.size());
        std::vector<double> d_in(in.size(), 0.0), d_w1(w1.size(), 0.0), d_w2(w2.size(), 0.0);
        std::vector<double> d_b1(b1.size(), 0.0), d_b2(b2.size(), 0.0);
        backward(d_in.data(), d_w1.data(), d_b1.data(), d_w2.data(), d_b2.data());
        EXPECT_TRUE(test::all_close(d_in, num_in, 1e-8, 1e-7));
        EXPECT_TRUE(test::all_close(d_w1, num_w1, 1e-8, 1e-7));
        EXPECT_TRUE(test::all_close(d_w2, num_w2, 1e-8, 1e-7));
        if (with_bias) {
            const auto num_b1 = test::numeric_gradient(L, b1.data(), b1.size());
            const auto num_b2 = test::numeric_gradient(L, b2.data(), b2.size());
            EXPECT_TRUE(test::all_close(d_b1, num_b1, 1e-8, 1e-7));
            EXPECT_TRUE(test::all_close(d_b2, num_b2, 1e-8, 1e-7));
        }
    }
};

TEST_F(GeluMlpGradient, WithBiasesMatchesFiniteDifferences) {
    check_finite_differences();
}

TEST_F(GeluMlpGradient, WithoutBiasesMatchesFiniteDifferences) {
    with_bias = false;
    check_finite_differences();
    // Without biases the forward is the same as with zero biases.
    std::fill(b1.begin(), b1.end(), 0.0);
    std::fill(b2.begin(), b2.end(), 0.0);
    loss();
    const auto no_bias = out;
    with_bias = true;
    loss();
    EXPECT_EQ(out, no_bias);
}

// ---- ReLU: the GELU MLP's tests with relu. The inputs put no pre-activation within the
// finite-difference step of the kink at 0 (checked), where the derivative jumps.
class ReluMlpGradient : public GeluMlpGradient {
  protected:
    ReluMlpGradient() { relu = true; }
    void expect_away_from_the_kink() {
        loss();
        for (double v : h) ASSERT_GT(std::abs(v), 1e-3);
    }
};

TEST_F(ReluMlpGradient, WithBiasesMatchesFiniteDifferences) {
    expect_away_from_the_kink();
    check_finite_differences();
}

TEST_F(ReluMlpGradient, WithoutBiasesMatchesFiniteDifferences) {
    with_bias = false;
    expect_away_from_the_kink();
    check_finite_differences();
}

TEST_F(GeluMlpGradient, NullableGradientsAndAccumulation) {
    std::vector<double> d_in(in.size(), 0.0), d_w1(w1.size(), 0.0), d_w2(w2.size(), 0.0);
    std::vector<double> d_b1(b1.size(), 0.0), d_b2(b2.size(), 0.0);
    backward(d_in.data(), d_w1.data(), d_b1.data(), d_w2.data(), d_b2.data());
    // Nulls skip only their own gradient.
    std::vector<double> n_w1(w1.size(), 0.0), n_w2(w2.size(), 0.0);
    backward(nullptr, n_w1.data(), nullptr, n_w2.data(), nullptr);
    EXPECT_EQ(n_w1, d_w1);
    EXPECT_EQ(n_w2, d_w2);
    // Twice from zero is twice once (up to rounding: d_b1 and d_in add several terms into
    // the same element, in a different order the second time).
    std::vector<double> t_in(in.size(), 0.0), t_w1(w1.size(), 0.0), t_w2(w2.size(), 0.0);
    std::vector<double> t_b1(b1.size(), 0.0), t_b2(b2.size(), 0.0);
    for (int k = 0; k < 2; ++k)
        backward(t_in.data(), t_w1.data(), t_b1.data(), t_w2.data(), t_b2.data());
    auto doubled = [](std::vector<double> v) {
        for (auto& x : v) x *= 2;
        return v;
    };
    EXPECT_TRUE(test::all_close(t_in, doubled(d_in), 1e-14, 1e-13));
    EXPECT_TRUE(test::all_close(t_w1, doubled(d_w1), 1e-14, 1e-13));
    EXPECT_TRUE(test::all_close(t_b1, doubled(d_b1), 1e-14, 1e-13));
    EXPECT_TRUE(test::all_close(t_w2, doubled(d_w2), 1e-14, 1e-13));
    EXPECT_TRUE(test::all_close(t_b2, doubled(d_b2), 1e-14, 1e-13));
}

TEST(Mlp, RejectsBadSizes) {
    std::vector<float> v(64);
    float* p = v.data();
    EXPECT_THROW(nn::swiglu_mlp_forward(p, p, p, p, p, p, p, p, 2, 4, 0), Error);
    EXPECT_THROW(nn::gelu_mlp_forward(p, p, p, p, p, p, p, p, 2, 0, 4), Error);
}

// The float path against the double path at a size where N * H = 38400 exceeds the
// activations' OpenMP threshold (32768), with weights scaled by 1 / sqrt(fan-in) so every
// layer's outputs are of order 1.
TEST(Mlp, FloatPathMatchesDoubleAtParallelSize) {
    const int64_t N = 64, C = 32, H = 600;
    const auto in = test::random_normal(size_t(N * C), 21);
    const auto w1 = test::random_normal(size_t(H * C), 22, 1 / std::sqrt(double(C)));
    const auto w3 = test::random_normal(size_t(H * C), 23, 1 / std::sqrt(double(C)));
    const auto w2 = test::random_normal(size_t(C * H), 24, 1 / std::sqrt(double(H)));
    const auto b1 = test::random_normal(size_t(H), 25), b2 = test::random_normal(size_t(C), 26);
    const auto d_out = test::random_normal(size_t(N * C), 27);
    const size_t NH = size_t(N * H);
    // Sums of up to 600 float products: ~sqrt(600) eps relative to the terms' scale.
    const double atol = 2e-5, rtol = 2e-5;

    {  // SwiGLU: all four gradients.
        std::vector<double> out(in.size()), h1(NH), h3(NH), act(NH), scratch(3 * NH);
        std::vector<double> d_in(in.size()), d_w1(w1.size()), d_w3(w3.size()), d_w2(w2.size());
        nn::swiglu_mlp_forward(out.data(), h1.data(), h3.data(), act.data(), in.data(), w1.data(),
                               w3.data(), w2.data(), N, C, H);
        nn::swiglu_mlp_backward(d_in.data(), d_w1.data(), d_w3.data(), d_w2.data(), scratch.data(),
                                d_out.data(), in.data(), h1.data(), h3.data(), act.data(),
                                w1.data(), w3.data(), w2.data(), N, C, H);
        const auto inf = test::to_f32(in), w1f = test::to_f32(w1), w3f = test::to_f32(w3),
                   w2f = test::to_f32(w2), dof = test::to_f32(d_out);
        std::vector<float> o(in.size()), g1(NH), g3(NH), a(NH), s(3 * NH);
        std::vector<float> di(in.size()), dw1(w1.size()), dw3(w3.size()), dw2(w2.size());
        nn::swiglu_mlp_forward(o.data(), g1.data(), g3.data(), a.data(), inf.data(), w1f.data(),
                               w3f.data(), w2f.data(), N, C, H);
        nn::swiglu_mlp_backward(di.data(), dw1.data(), dw3.data(), dw2.data(), s.data(), dof.data(),
                                inf.data(), g1.data(), g3.data(), a.data(), w1f.data(), w3f.data(),
                                w2f.data(), N, C, H);
        EXPECT_TRUE(test::all_close(o, out, atol, rtol));
        EXPECT_TRUE(test::all_close(a, act, atol, rtol));
        EXPECT_TRUE(test::all_close(di, d_in, atol, rtol));
        EXPECT_TRUE(test::all_close(dw1, d_w1, atol, rtol));
        EXPECT_TRUE(test::all_close(dw3, d_w3, atol, rtol));
        EXPECT_TRUE(test::all_close(dw2, d_w2, atol, rtol));
    }
    {  // GELU with biases.
        std::vector<double> out(in.size()), h(NH), act(NH), scratch(2 * NH);
        std::vector<double> d_in(in.size()), d_w1(w1.size()), d_b1(b1.size()), d_w2(w2.size()),
            d_b2(b2.size());
        nn::gelu_mlp_forward(out.data(), h.data(), act.data(), in.data(), w1.data(), b1.data(),
                             w2.data(), b2.data(), N, C, H);
        nn::gelu_mlp_backward(d_in.data(), d_w1.data(), d_b1.data(), d_w2.data(), d_b2.data(),
                              scratch.data(), d_out.data(), in.data(), h.data(), act.data(),
                              w1.data(), w2.data(), N, C, H);
        const auto inf = test::to_f32(in), w1f = test::to_f32(w1), b1f = test::to_f32(b1),
                   w2f = test::to_f32(w2), b2f = test::to_f32(b2), dof = test::to_f32(d_out);
        std::vector<float> o(in.size()), g(NH), a(NH), s(2 * NH);
        std::vector<float> di(in.size()), dw1(w1.size()), db1(b1.size()), dw2(w2.size()),
            db2(b2.size());
        nn::gelu_mlp_forward(o.data(), g.data(), a.data(), inf.data(), w1f.data(), b1f.data(),
                             w2f.data(), b2f.data(), N, C, H);
        nn::gelu_mlp_backward(di.data(), dw1.data(), db1.data(), dw2.data(), db2.data(), s.data(),
                              dof.data(), inf.data(), g.data(), a.data(), w1f.data(), w2f.data(), N,
                              C, H);
        EXPECT_TRUE(test::all_close(o, out, atol, rtol));
        EXPECT_TRUE(test::all_close(a, act, atol, rtol));
        EXPECT_TRUE(test::all_close(di, d_in, atol, rtol));
        EXPECT_TRUE(test::all_close(dw1, d_w1, atol, rtol));
        EXPECT_TRUE(test::all_close(db1, d_b1, atol, rtol));
        EXPECT_TRUE(test::all_close(dw2, d_w2, atol, rtol));
        EXPECT_TRUE(test::all_close(db2, d_b2, atol, rtol));
    }
}

// ---- PyTorch ----

class MlpFixture : public ::testing::Test {
  protected:
    test::Fixture fx{"mlp"};
    std::vector<double> x = fx.get("x"), dy = fx.get("dy");
    const int64_t N = fx.shape("x")[0], C = fx.shape("x")[1], H = fx.shape("swiglu_w1")[0];

    template <class R>
    static ::testing::AssertionResult close(const std::vector<R>& got,
                                            const std::vector<double>& want, double atol,
                                            double rtol) {
        return test::all_close<R, double>(got, want, atol, rtol);
    }

    // Runs the SwiGLU MLP in precision R on the fixture and compares every output with
    // atol / rtol.
    template <class R>
    void check_swiglu(double atol, double rtol) {
        auto cast = [](const std::vector<double>& v) { return std::vector<R>(v.begin(), v.end()); };
        const auto in = cast(x), d_out = cast(dy), w1 = cast(fx.get("swiglu_w1")),
                   w3 = cast(fx.get("swiglu_w3")), w2 = cast(fx.get("swiglu_w2"));
        std::vector<R> out(size_t(N * C)), h1(size_t(N * H)), h3(h1.size()), act(h1.size());
        std::vector<R> scratch(3 * h1.size(), R(NAN));
        nn::swiglu_mlp_forward(out.data(), h1.data(), h3.data(), act.data(), in.data(), w1.data(),
                               w3.data(), w2.data(), N, C, H);
        EXPECT_TRUE(close(out, fx.get("swiglu_y"), atol, rtol));
        std::vector<R> d_in(in.size(), R(0)), d_w1(w1.size(), R(0)), d_w3(w3.size(), R(0)),
            d_w2(w2.size(), R(0));
        nn::swiglu_mlp_backward(d_in.data(), d_w1.data(), d_w3.data(), d_w2.data(), scratch.data(),
                                d_out.data(), in.data(), h1.data(), h3.data(), act.data(),
                                w1.data(), w3.data(), w2.data(), N, C, H);
        EXPECT_TRUE(close(d_in, fx.get("swiglu_dx"), atol, rtol));
        EXPECT_TRUE(close(d_w1, fx.get("swiglu_dw1"), atol, rtol));
        EXPECT_TRUE(close(d_w3, fx.get("swiglu_dw3"), atol, rtol));
        EXPECT_TRUE(close(d_w2, fx.get("swiglu_dw2"), atol, rtol));
    }

    template <class R>
    void check_gelu(double atol, double rtol, const std::string& kind = "gelu") {
        auto cast = [](const std::vector<double>& v) { return std::vector<R>(v.begin(), v.end()); };
        const auto in = cast(x), d_out = cast(dy), w1 = cast(fx.get("gelu_w1")),
                   b1 = cast(fx.get("gelu_b1")), w2 = cast(fx.get("gelu_w2")),
                   b2 = cast(fx.get("gelu_b2"));
        std::vector<R> out(size_t(N * C)), h(size_t(N * H)), act(h.size());
        std::vector<R> scratch(2 * h.size(), R(NAN));
        nn::gelu_mlp_forward(out.data(), h.data(), act.data(), in.data(), w1.data(), b1.data(),
                             w2.data(), b2.data(), N, C, H);
        EXPECT_TRUE(close(out, fx.get("gelu_y"), atol, rtol));
        std::vector<R> d_in(in.size(), R(0)), d_w1(w1.size(), R(0)), d_b1(b1.size(), R(0)),
            d_w2(w2.size(), R(0)), d_b2(b2.size(), R(0));
        nn::gelu_mlp_backward(d_in.data(), d_w1.data(), d_b1.data(), d_w2.data(), d_b2.data(),
                              scratch.data(), d_out.data(), in.data(), h.data(), act.data(),
                              w1.data(), w2.data(), N, C, H);
        EXPECT_TRUE(close(d_in, fx.get("gelu_dx"), atol, rtol));
        EXPECT_TRUE(close(d_w1, fx.get("gelu_dw1"), atol, rtol));
        EXPECT_TRUE(close(d_b1, fx.get("gelu_db1"), atol, rtol));
        EXPECT_TRUE(close(d_w2, fx.get("gelu_dw2"), atol, rtol));
        EXPECT_TRUE(close(d_b2, fx.get("gelu_db2"), atol, rtol));
    }
};

TEST_F(MlpFixture, SwigluDoubleMatchesTorch) {
    check_swiglu<double>(1e-13, 1e-12);
}
TEST_F(MlpFixture, GeluDoubleMatchesTorch) {
    check_gelu<double>(1e-13, 1e-12);
}
TEST_F(MlpFixture, ReluDoubleMatchesTorch) {
    check_gelu<double>(1e-13, 1e-12, "relu");
}

// Float: three chained layers of sums over 8 or 12 terms of order-1 values; each layer
// adds a few ulp per term, so 256 eps = 3e-5 absolute and 64 eps relative.
TEST_F(MlpFixture, SwigluFloatMatchesTorch) {
    check_swiglu<float>(256 * kEpsF, 64 * kEpsF);
}
TEST_F(MlpFixture, GeluFloatMatchesTorch) {
    check_gelu<float>(256 * kEpsF, 64 * kEpsF);
}
TEST_F(MlpFixture, ReluFloatMatchesTorch) {
    check_gelu<float>(256 * kEpsF, 64 * kEpsF, "relu");
}

}  // namespace
}  // namespace moe
