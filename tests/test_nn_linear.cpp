// Linear layer: backward by finite differences (with and without bias, with the nullable
// d_in and d_bias), forward + backward against torch.nn.functional.linear in double and on
// the float path, and that the backward accumulates.
#include <cmath>
#include <limits>

#include "nn/linear.h"
#include "test_support.h"

namespace moe {
namespace {

constexpr double kEpsF = std::numeric_limits<float>::epsilon();

class LinearGradient : public ::testing::Test {
  protected:
    const int64_t N = 4, C = 5, OC = 3;
    std::vector<double> in = test::random_normal(size_t(N * C), 1);
    std::vector<double> weight = test::random_normal(size_t(OC * C), 2);
    std::vector<double> bias = test::random_normal(size_t(OC), 3);
    std::vector<double> w = test::random_normal(size_t(N * OC), 4);  // loss weights = d_out
    std::vector<double> out = std::vector<double>(size_t(N * OC));

    double loss(bool with_bias) {
        nn::linear_forward(out.data(), in.data(), weight.data(), with_bias ? bias.data() : nullptr,
                           N, C, OC);
        return test::weighted_sum(out, w);
    }
};

TEST_F(LinearGradient, WithBiasMatchesFiniteDifferences) {
    auto L = [&] { return loss(true); };
    const auto num_in = test::numeric_gradient(L, in.data(), in.size());
    const auto num_w = test::numeric_gradient(L, weight.data(), weight.size());
    const auto num_b = test::numeric_gradient(L, bias.data(), bias.size());
    std::vector<double> d_in(in.size(), 0.0), d_w(weight.size(), 0.0), d_b(bias.size(), 0.0);
    nn::linear_backward(d_in.data(), d_w.data(), d_b.data(), w.data(), in.data(), weight.data(), N,
                        C, OC);
    EXPECT_TRUE(test::all_close(d_in, num_in, 1e-8, 1e-7));
    EXPECT_TRUE(test::all_close(d_w, num_w, 1e-8, 1e-7));
    EXPECT_TRUE(test::all_close(d_b, num_b, 1e-8, 1e-7));
}

TEST_F(LinearGradient, WithoutBiasMatchesFiniteDifferences) {
    auto L = [&] { return loss(false); };
    const auto num_in = test::numeric_gradient(L, in.data(), in.size());
    const auto num_w = test::numeric_gradient(L, weight.data(), weight.size());
    std::vector<double> d_in(in.size(), 0.0), d_w(weight.size(), 0.0);
    nn::linear_backward(d_in.data(), d_w.data(), static_cast<double*>(nullptr), w.data(), in.data(),
                        weight.data(), N, C, OC);
    EXPECT_TRUE(test::all_close(d_in, num_in, 1e-8, 1e-7));
    EXPECT_TRUE(test::all_close(d_w, num_w, 1e-8, 1e-7));
    // Without a bias the output is exactly in @ weight^T: check one element by hand.
    loss(false);
    double o01 = 0;
    for (int64_t c = 0; c < C; ++c) o01 += in[size_t(c)] * weight[size_t(C + c)];
    EXPECT_NEAR(out[1], o01, 1e-14);
}

TEST_F(LinearGradient, NullDInAndDBiasSkipOnlyThoseGradients) {
    std::vector<double> d_in(in.size(), 0.0), d_w(weight.size(), 0.0), d_b(bias.size(), 0.0);
    nn::linear_backward(d_in.data(), d_w.data(), d_b.data(), w.data(), in.data(), weight.data(), N,
                        C, OC);
    std::vector<double> d_w_only(weight.size(), 0.0), d_b2(bias.size(), 0.0), d_in2(in.size(), 0.0);
    nn::linear_backward(static_cast<double*>(nullptr), d_w_only.data(),
                        static_cast<double*>(nullptr), w.data(), in.data(), weight.data(), N, C,
                        OC);
    EXPECT_EQ(d_w_only, d_w);
    std::fill(d_w_only.begin(), d_w_only.end(), 0.0);
    nn::linear_backward(static_cast<double*>(nullptr), d_w_only.data(), d_b2.data(), w.data(),
                        in.data(), weight.data(), N, C, OC);
    EXPECT_EQ(d_w_only, d_w);
    EXPECT_EQ(d_b2, d_b);
    std::fill(d_w_only.begin(), d_w_only.end(), 0.0);
    nn::linear_backward(d_in2.data(), d_w_only.data(), static_cast<double*>(nullptr), w.data(),
                        in.data(), weight.data(), N, C, OC);
    EXPECT_EQ(d_w_only, d_w);
    EXPECT_EQ(d_in2, d_in);
    // The same on the float path.
    auto inf = test::to_f32(in), wf = test::to_f32(weight), dof = test::to_f32(w);
    std::vector<float> dwf(weight.size(), 0.0f), dwf2(weight.size(), 0.0f), dinf(in.size(), 0.0f),
        dbf(bias.size(), 0.0f);
    nn::linear_backward(dinf.data(), dwf.data(), dbf.data(), dof.data(), inf.data(), wf.data(), N,
                        C, OC);
    nn::linear_backward(static_cast<float*>(nullptr), dwf2.data(), static_cast<float*>(nullptr),
                        dof.data(), inf.data(), wf.data(), N, C, OC);
    EXPECT_EQ(dwf2, dwf);
}

TEST_F(LinearGradient, BackwardAccumulates) {
    std::vector<double> d_in(in.size(), 0.0), d_w(weight.size(), 0.0), d_b(bias.size(), 0.0);
    auto twice_in = d_in, twice_w = d_w, twice_b = d_b;
    nn::linear_backward(d_in.data(), d_w.data(), d_b.data(), w.data(), in.data(), weight.data(), N,
                        C, OC);
    for (int k = 0; k < 2; ++k)
        nn::linear_backward(twice_in.data(), twice_w.data(), twice_b.data(), w.data(), in.data(),
                            weight.data(), N, C, OC);
    for (auto* v : {&d_in, &d_w, &d_b})
        for (auto& x : *v) x *= 2;
    EXPECT_EQ(twice_in, d_in);
    EXPECT_EQ(twice_w, d_w);
    EXPECT_EQ(twice_b, d_b);
}

TEST(Linear, RejectsBadSizes) {
    std::vector<float> a(4), b(4), c(4);
    EXPECT_THROW(nn::linear_forward(a.data(), b.data(), c.data(),
                                    static_cast<const float*>(nullptr), 2, 0, 2),
                 Error);
    EXPECT_THROW(nn::linear_backward(a.data(), b.data(), static_cast<float*>(nullptr), c.data(),
                                     a.data(), b.data(), -1, 2, 2),
                 Error);
}

// ---- PyTorch ----

class LinearFixture : public ::testing::Test {
  protected:
    test::Fixture fx{"linear"};
    std::vector<double> x = fx.get("x"), wt = fx.get("w"), b = fx.get("b"), dy = fx.get("dy");
    const int64_t N = fx.shape("x")[0], C = fx.shape("x")[1], OC = fx.shape("w")[0];
};

TEST_F(LinearFixture, DoubleMatchesTorch) {
    std::vector<double> y(size_t(N * OC));
    nn::linear_forward(y.data(), x.data(), wt.data(), b.data(), N, C, OC);
    EXPECT_TRUE(test::all_close(y, fx.get("y"), 1e-13, 1e-12));
    nn::linear_forward(y.data(), x.data(), wt.data(), static_cast<const double*>(nullptr), N, C,
                       OC);
    EXPECT_TRUE(test::all_close(y, fx.get("y_nobias"), 1e-13, 1e-12));
    std::vector<double> dx(x.size(), 0.0), dw(wt.size(), 0.0), db(b.size(), 0.0);
    nn::linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), wt.data(), N, C, OC);
    EXPECT_TRUE(test::all_close(dx, fx.get("dx"), 1e-13, 1e-12));
    EXPECT_TRUE(test::all_close(dw, fx.get("dw"), 1e-13, 1e-12));
    EXPECT_TRUE(test::all_close(db, fx.get("db"), 1e-13, 1e-12));
}

TEST_F(LinearFixture, FloatMatchesTorch) {
    // Each output sums at most 7 products of normal values (|terms| up to ~10), each off
    // by ~1 ulp from rounding the inputs and the sum: 64 eps = 7.6e-6 absolute covers it.
    const double atol = 64 * kEpsF, rtol = 16 * kEpsF;
    auto xf = test::to_f32(x), wf = test::to_f32(wt), bf = test::to_f32(b), dyf = test::to_f32(dy);
    std::vector<float> y(size_t(N * OC));
    nn::linear_forward(y.data(), xf.data(), wf.data(), bf.data(), N, C, OC);
    EXPECT_TRUE(test::all_close(y, fx.get("y"), atol, rtol));
    nn::linear_forward(y.data(), xf.data(), wf.data(), static_cast<const float*>(nullptr), N, C,
                       OC);
    EXPECT_TRUE(test::all_close(y, fx.get("y_nobias"), atol, rtol));
    std::vector<float> dx(x.size(), 0.0f), dw(wt.size(), 0.0f), db(b.size(), 0.0f);
    nn::linear_backward(dx.data(), dw.data(), db.data(), dyf.data(), xf.data(), wf.data(), N, C,
                        OC);
    EXPECT_TRUE(test::all_close(dx, fx.get("dx"), atol, rtol));
    EXPECT_TRUE(test::all_close(dw, fx.get("dw"), atol, rtol));
    EXPECT_TRUE(test::all_close(db, fx.get("db"), atol, rtol));
}

}  // namespace
}  // namespace moe
