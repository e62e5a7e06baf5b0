// Conv2d: the double reference by finite differences, the oneDNN float path against the
// float reference over a sweep of shapes and all three layouts, both against
// torch.nn.functional.conv2d fixtures (incl. a patch embedding), accumulation, nullable
// gradients, batch-size caching, reduction groups, and shape errors.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/timer.h"
#include "kernels/gemm.h"
#include "kernels/grouped_reduce.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "test_support.h"

namespace moe {
namespace {

using nn::Conv2d;
using nn::Conv2dLayout;
using nn::Conv2dShape;

constexpr double kEpsF = std::numeric_limits<float>::epsilon();

size_t in_size(const Conv2dShape& s, int64_t B) {
    return size_t(B * s.height * s.width * s.in_channels);
}
size_t out_size(const Conv2dShape& s, int64_t B) {
    return size_t(B * s.out_height() * s.out_width() * s.out_channels);
}
size_t w_size(const Conv2dShape& s) {
    return size_t(s.out_channels * s.in_channels * s.kernel * s.kernel);
}
double max_abs(const std::vector<float>& v) {
    double m = 0;
    for (float x : v) m = std::max(m, double(std::fabs(x)));
    return m;
}
// Tolerance of a float sum of n products whose magnitude is at most `term`: rounding
// errors grow like sqrt(n) for the orders oneDNN sums in.
double sum_tol(double n, double term) {
    return 8 * kEpsF * std::sqrt(n) * term;
}

// ---- shapes and errors ----

TEST(Conv2dShape, OutputSizesAndErrors) {
    Conv2dShape s{.in_channels = 3,
                  .out_channels = 8,
                  .kernel = 3,
                  .stride = 2,
                  .padding = 1,
                  .height = 7,
                  .width = 6};
    EXPECT_EQ(s.out_height(), 4);
    EXPECT_EQ(s.out_width(), 3);
    EXPECT_NO_THROW(s.validate("conv2d"));
    Conv2dShape big{.in_channels = 1, .out_channels = 1, .kernel = 5, .height = 3, .width = 3};
    EXPECT_TRUE(test::throws_error_with([&] { Conv2d c(big); },
                                        {"conv2d: kernel 5 larger than padded input 3x3"}));
    std::vector<float> buf(1000);
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            nn::conv2d_forward_reference(buf.data(), buf.data(), buf.data(),
                                         static_cast<const float*>(nullptr), 1, big);
        },
        {"conv2d_forward_reference: kernel 5", "in 1x3x3"}));
    big.padding = 1;  // 5x5 padded: fits
    EXPECT_NO_THROW(Conv2d c(big));
    for (auto bad :
         {Conv2dShape{.in_channels = 0, .out_channels = 1, .kernel = 1, .height = 2, .width = 2},
          Conv2dShape{.in_channels = 1,
          .out_channels = 1,
          .kernel = 1,
          .stride = 0,
          .height = 2,
          .width = 2},
          Conv2dShape{.in_channels = 1,
          .out_channels = 1,
          .kernel = 1,
          .padding = -1,
          .height = 2,
          .width = 2},
          Conv2dShape{.in_channels = 1, .out_channels = 1, .kernel = 1, .height = 0, .width = 2}})
        EXPECT_TRUE(test::throws_error_with([&] { Conv2d c(bad); }, {"conv2d: ", bad.str()}));
    Conv2d ok(s);
    EXPECT_TRUE(test::throws_error_with(
        [&] { ok.forward(buf.data(), buf.data(), buf.data(), nullptr, -1); },
        {"conv2d: negative batch -1", "in 3x7x6"}));
}

// ---- finite differences on the double reference ----

void check_gradients(const Conv2dShape& s, int64_t B, bool with_bias) {
    SCOPED_TRACE(s.str());
    auto in = test::random_normal(in_size(s, B), 1);
    auto w = test::random_normal(w_size(s), 2);
    auto b = test::random_normal(size_t(s.out_channels), 3);
    auto dy = test::random_normal(out_size(s, B), 4);
    std::vector<double> y(out_size(s, B));
    auto L = [&] {
        nn::conv2d_forward(y.data(), in.data(), w.data(), with_bias ? b.data() : nullptr, B, s);
        return test::weighted_sum(y, dy);
    };
    const auto num_in = test::numeric_gradient(L, in.data(), in.size());
    const auto num_w = test::numeric_gradient(L, w.data(), w.size());
    const auto num_b = test::numeric_gradient(L, b.data(), b.size());
    std::vector<double> d_in(in.size(), 0.0), d_w(w.size(), 0.0), d_b(b.size(), 0.0);
    nn::conv2d_backward(d_in.data(), d_w.data(), with_bias ? d_b.data() : nullptr, dy.data(),
                        in.data(), w.data(), B, s);
    EXPECT_TRUE(test::all_close(d_in, num_in, 1e-7, 1e-7));
    EXPECT_TRUE(test::all_close(d_w, num_w, 1e-7, 1e-7));
    if (with_bias) {
        EXPECT_TRUE(test::all_close(d_b, num_b, 1e-7, 1e-7));
    }
}

TEST(Conv2dGradient, ReferenceMatchesFiniteDifferences) {
    check_gradients({.in_channels = 2,
                     .out_channels = 3,
                     .kernel = 3,
                     .stride = 2,
                     .padding = 1,
                     .height = 5,
                     .width = 4},
                    2, true);
    check_gradients({.in_channels = 3,
                     .out_channels = 2,
                     .kernel = 2,
                     .stride = 1,
                     .padding = 0,
                     .height = 4,
                     .width = 3},
                    2, false);
    // Stride larger than the kernel: some inputs reach no output (zero gradient).
    check_gradients({.in_channels = 1,
                     .out_channels = 2,
                     .kernel = 2,
                     .stride = 3,
                     .padding = 2,
                     .height = 6,
                     .width = 5},
                    1, true);
}

// ---- optimised float path against the float reference ----

struct Case {
    Conv2dShape s;
    int64_t B;
};

void compare_with_reference(Conv2d& conv, int64_t B, uint64_t seed) {
    const Conv2dShape& s = conv.shape();
    SCOPED_TRACE(s.str() + " B=" + std::to_string(B));
    const auto in = test::random_normal_f32(in_size(s, B), seed);
    const auto w = test::random_normal_f32(w_size(s), seed + 1);
    const auto b = test::random_normal_f32(size_t(s.out_channels), seed + 2);
    const auto dy = test::random_normal_f32(out_size(s, B), seed + 3);
    const double K2 = double(s.kernel * s.kernel);

    std::vector<float> y(out_size(s, B)), y_ref(y.size());
    conv.forward(y.data(), in.data(), w.data(), b.data(), B);
    nn::conv2d_forward_reference(y_ref.data(), in.data(), w.data(), b.data(), B, s);
    EXPECT_TRUE(
        test::all_close(y, y_ref, sum_tol(K2 * s.in_channels + 1, max_abs(in) * max_abs(w)), 0));

    std::vector<float> d_in(in.size(), 0.0f), d_w(w.size(), 0.0f), d_b(b.size(), 0.0f);
    auto d_in_ref = d_in, d_w_ref = d_w, d_b_ref = d_b;
    conv.backward(d_in.data(), d_w.data(), d_b.data(), dy.data(), in.data(), w.data(), B);
    nn::conv2d_backward_reference(d_in_ref.data(), d_w_ref.data(), d_b_ref.data(), dy.data(),
                                  in.data(), w.data(), B, s);
    const double positions = double(B * s.out_height() * s.out_width());
    EXPECT_TRUE(
        test::all_close(d_in, d_in_ref, sum_tol(K2 * s.out_channels, max_abs(dy) * max_abs(w)), 0));
    EXPECT_TRUE(test::all_close(d_w, d_w_ref, sum_tol(positions, max_abs(dy) * max_abs(in)), 0));
    EXPECT_TRUE(test::all_close(d_b, d_b_ref, sum_tol(positions, max_abs(dy)), 0));
}

std::vector<Case> sweep() {
    // Not the full product (too slow for a unit test): each value of every parameter
    // appears in several combinations with the others.
    const int64_t channels[] = {1, 3, 8, 17, 32};
    const int64_t kernels[] = {1, 3, 5};
    const int64_t sizes[][2] = {{7, 7}, {9, 6}, {5, 11}, {12, 12}};
    std::vector<Case> cases;
    for (int i = 0; i < 30; ++i) {
        Conv2dShape s;
        s.in_channels = channels[i % 5];
        s.out_channels = channels[(i * 3 + 1) % 5];
        s.kernel = kernels[i % 3];
        s.stride = 1 + (i / 3) % 2;
        s.padding = (i / 2) % 3;
        s.height = sizes[(i / 5) % 4][0];
        s.width = sizes[(i / 5) % 4][1];
        cases.push_back({s, 1 + i % 3});
    }
    // Corners: padding wider than a 1x1 kernel (the border is bias only), a kernel as large
    // as the padded input (one output), a stride past the kernel (inputs reaching nothing).
    cases.push_back({{.in_channels = 3,
                      .out_channels = 8,
                      .kernel = 1,
                      .stride = 1,
                      .padding = 2,
                      .height = 4,
                      .width = 5},
                     2});
    cases.push_back({{.in_channels = 8,
                      .out_channels = 3,
                      .kernel = 5,
                      .stride = 2,
                      .padding = 1,
                      .height = 3,
                      .width = 3},
                     2});
    cases.push_back({{.in_channels = 17,
                      .out_channels = 17,
                      .kernel = 2,
                      .stride = 3,
                      .padding = 0,
                      .height = 11,
                      .width = 8},
                     3});
    return cases;
}

TEST(Conv2dFloat, MatchesReferenceOverShapes) {
    uint64_t seed = 10;
    for (const Case& c : sweep()) {
        Conv2d conv(c.s);
        compare_with_reference(conv, c.B, seed += 4);
    }
}

TEST(Conv2dFloat, EveryLayoutMatchesReference) {
    const Case cases[] = {
        {{.in_channels = 3,
          .out_channels = 32,
          .kernel = 3,
          .stride = 1,
          .padding = 1,
          .height = 9,
          .width = 8},
         2},
        {{.in_channels = 32,
          .out_channels = 17,
          .kernel = 3,
          .stride = 2,
          .padding = 1,
          .height = 7,
          .width = 7},
         3},
        {{.in_channels = 16,
          .out_channels = 64,
          .kernel = 1,
          .stride = 1,
          .padding = 0,
          .height = 5,
          .width = 6},
         2},
        {{.in_channels = 1,
          .out_channels = 16,
          .kernel = 4,
          .stride = 4,
          .padding = 0,
          .height = 12,
          .width = 12},
         2},
    };
    uint64_t seed = 500;
    for (auto layout : {Conv2dLayout::plain, Conv2dLayout::any_weights, Conv2dLayout::any})
        for (const Case& c : cases) {
            Conv2d conv(c.s, layout);
            SCOPED_TRACE(conv.implementations(c.B));
            compare_with_reference(conv, c.B, seed += 4);
        }
}

// ---- behaviour of the float path ----

class Conv2dBehaviour : public ::testing::TestWithParam<Conv2dLayout> {
  protected:
    Conv2dShape s{.in_channels = 5,
                  .out_channels = 6,
                  .kernel = 3,
                  .stride = 2,
                  .padding = 1,
                  .height = 9,
                  .width = 7};
    Conv2d conv{s, GetParam()};
    static constexpr int64_t B = 4;
    std::vector<float> in = test::random_normal_f32(in_size(s, B), 1);
    std::vector<float> w = test::random_normal_f32(w_size(s), 2);
    std::vector<float> b = test::random_normal_f32(size_t(s.out_channels), 3);
    std::vector<float> dy = test::random_normal_f32(out_size(s, B), 4);
};

TEST_P(Conv2dBehaviour, BackwardAccumulates) {
    std::vector<float> d_in(in.size(), 0.0f), d_w(w.size(), 0.0f), d_b(b.size(), 0.0f);
    conv.backward(d_in.data(), d_w.data(), d_b.data(), dy.data(), in.data(), w.data(), B);
    auto acc_in = test::random_normal_f32(in.size(), 7),
         acc_w = test::random_normal_f32(w.size(), 8), acc_b = test::random_normal_f32(b.size(), 9);
    auto expect_in = acc_in, expect_w = acc_w, expect_b = acc_b;
    for (size_t i = 0; i < d_in.size(); ++i) expect_in[i] += d_in[i];
    for (size_t i = 0; i < d_w.size(); ++i) expect_w[i] += d_w[i];
    for (size_t i = 0; i < d_b.size(); ++i) expect_b[i] += d_b[i];
    conv.backward(acc_in.data(), acc_w.data(), acc_b.data(), dy.data(), in.data(), w.data(), B);
    EXPECT_EQ(acc_in, expect_in);
    EXPECT_EQ(acc_w, expect_w);
    EXPECT_EQ(acc_b, expect_b);
}

// accumulate_d_in = false writes d_in (garbage before the call must not survive, in every
// layout: straight into the caller's memory or through a plain reorder) while the parameter
// gradients still accumulate; the results are the accumulating ones on zeros, bit for bit.
TEST_P(Conv2dBehaviour, BackwardCanOverwriteTheInputGradient) {
    std::vector<float> d_in(in.size(), 0.0f), d_w(w.size(), 0.0f), d_b(b.size(), 0.0f);
    conv.backward(d_in.data(), d_w.data(), d_b.data(), dy.data(), in.data(), w.data(), B);
    std::vector<float> over(in.size(), std::numeric_limits<float>::quiet_NaN());
    auto acc_w = test::random_normal_f32(w.size(), 8), acc_b = test::random_normal_f32(b.size(), 9);
    auto expect_w = acc_w, expect_b = acc_b;
    for (size_t i = 0; i < d_w.size(); ++i) expect_w[i] += d_w[i];
    for (size_t i = 0; i < d_b.size(); ++i) expect_b[i] += d_b[i];
    conv.backward(over.data(), acc_w.data(), acc_b.data(), dy.data(), in.data(), w.data(), B,
                  false);
    EXPECT_EQ(over, d_in);
    EXPECT_EQ(acc_w, expect_w);
    EXPECT_EQ(acc_b, expect_b);
}

TEST_P(Conv2dBehaviour, NullGradientsSkipOnlyThose) {
    std::vector<float> d_in(in.size(), 0.0f), d_w(w.size(), 0.0f), d_b(b.size(), 0.0f);
    conv.backward(d_in.data(), d_w.data(), d_b.data(), dy.data(), in.data(), w.data(), B);
    std::vector<float> d_w2(w.size(), 0.0f);
    conv.backward(nullptr, d_w2.data(), nullptr, dy.data(), in.data(), w.data(), B);
    EXPECT_EQ(d_w2, d_w);
    // Forward without bias = forward with bias minus the bias (to rounding).
    std::vector<float> y(out_size(s, B)), y0(y.size());
    conv.forward(y.data(), in.data(), w.data(), b.data(), B);
    conv.forward(y0.data(), in.data(), w.data(), nullptr, B);
    for (size_t i = 0; i < y.size(); ++i) y0[i] += b[i % size_t(s.out_channels)];
    EXPECT_TRUE(test::all_close(y0, y, 1e-5, 1e-5));
}

TEST_P(Conv2dBehaviour, NewBatchSizeWorksAndSameBatchGivesSameBits) {
    auto run = [&](int64_t batch) {
        std::vector<float> y(out_size(s, batch)), d_in(in_size(s, batch), 0.0f),
            d_w(w.size(), 0.0f), d_b(b.size(), 0.0f);
        conv.forward(y.data(), in.data(), w.data(), b.data(), batch);
        conv.backward(d_in.data(), d_w.data(), d_b.data(), dy.data(), in.data(), w.data(), batch);
        y.insert(y.end(), d_in.begin(), d_in.end());
        y.insert(y.end(), d_w.begin(), d_w.end());
        y.insert(y.end(), d_b.begin(), d_b.end());
        return y;
    };
    const auto first = run(B);
    const auto smaller = run(1);
    // Image 0 of batch 1 is image 0 of batch 4: its forward output agrees.
    const size_t per_image = out_size(s, 1);
    EXPECT_TRUE(test::all_close(
        std::vector<float>(smaller.begin(), smaller.begin() + long(per_image)),
        std::vector<float>(first.begin(), first.begin() + long(per_image)), 1e-5, 1e-5));
    EXPECT_EQ(run(B), first);
}

TEST_P(Conv2dBehaviour, ReductionGroupsMatchTwoRanksBitForBit) {
    // One process with 4 groups over 4 images; two "ranks" of 2 images with 2 groups each,
    // combined by the top of the tree: the same bits (kernels/grouped_reduce.h).
    std::vector<float> d_w(w.size(), 0.0f), d_b(b.size(), 0.0f);
    {
        kernels::ReductionGroups g(4);
        conv.backward(nullptr, d_w.data(), d_b.data(), dy.data(), in.data(), w.data(), B);
    }
    std::vector<float> r0_w(w.size(), 0.0f), r0_b(b.size(), 0.0f), r1_w = r0_w, r1_b = r0_b;
    {
        kernels::ReductionGroups g(2);
        conv.backward(nullptr, r0_w.data(), r0_b.data(), dy.data(), in.data(), w.data(), 2);
        conv.backward(nullptr, r1_w.data(), r1_b.data(), dy.data() + out_size(s, 2),
                      in.data() + in_size(s, 2), w.data(), 2);
    }
    for (size_t i = 0; i < r0_w.size(); ++i) r0_w[i] += r1_w[i];
    for (size_t i = 0; i < r0_b.size(); ++i) r0_b[i] += r1_b[i];
    EXPECT_EQ(d_w, r0_w);
    EXPECT_EQ(d_b, r0_b);
    // And the reference agrees to rounding.
    std::vector<float> ref_w(w.size(), 0.0f), ref_b(b.size(), 0.0f);
    nn::conv2d_backward_reference(static_cast<float*>(nullptr), ref_w.data(), ref_b.data(),
                                  dy.data(), in.data(), w.data(), B, s);
    EXPECT_TRUE(test::all_close(d_w, ref_w, 1e-4, 1e-5));
    EXPECT_TRUE(test::all_close(d_b, ref_b, 1e-4, 1e-5));
    kernels::ReductionGroups g(8);  // 4 images do not split into 8 groups
    EXPECT_TRUE(test::throws_error_with(
        [&] { conv.backward(nullptr, d_w.data(), nullptr, dy.data(), in.data(), w.data(), B); },
        {"conv2d: batch 4 does not split into 8 reduction groups"}));
}

INSTANTIATE_TEST_SUITE_P(Layouts, Conv2dBehaviour,
                         ::testing::Values(Conv2dLayout::plain, Conv2dLayout::any_weights,
                                           Conv2dLayout::any));

// A patch embedding is a linear map of each flattened KxK patch: check that reading of the
// layer on 10x9 input with 3x3 patches (the last row and the last column are left over).
TEST(Conv2dPatchEmbedding, IsALinearMapOfEachPatch) {
    const Conv2dShape s{.in_channels = 2,
                        .out_channels = 5,
                        .kernel = 3,
                        .stride = 3,
                        .padding = 0,
                        .height = 10,
                        .width = 9 + 1};
    const int64_t B = 2, P = 3, C = s.in_channels, OH = s.out_height(), OW = s.out_width();
    ASSERT_EQ(OH, 3);
    ASSERT_EQ(OW, 3);
    const auto in = test::random_normal_f32(in_size(s, B), 21);
    const auto w = test::random_normal_f32(w_size(s), 22);
    const auto b = test::random_normal_f32(size_t(s.out_channels), 23);
    // Patches as rows [B*OH*OW, C*P*P] in the weight's (ic, kh, kw) order.
    std::vector<float> patches;
    for (int64_t n = 0; n < B; ++n)
        for (int64_t ph = 0; ph < OH; ++ph)
            for (int64_t pw = 0; pw < OW; ++pw)
                for (int64_t c = 0; c < C; ++c)
                    for (int64_t kh = 0; kh < P; ++kh)
                        for (int64_t kw = 0; kw < P; ++kw)
                            patches.push_back(in[size_t(
                                ((n * s.height + ph * P + kh) * s.width + pw * P + kw) * C + c)]);
    std::vector<float> expect(out_size(s, B)), y(expect.size());
    nn::linear_forward(expect.data(), patches.data(), w.data(), b.data(), B * OH * OW, C * P * P,
                       s.out_channels);
    Conv2d conv(s);
    conv.forward(y.data(), in.data(), w.data(), b.data(), B);
    EXPECT_TRUE(test::all_close(y, expect, 1e-5, 1e-5));
}

// ---- PyTorch ----

class Conv2dFixture : public ::testing::TestWithParam<std::string> {
  protected:
    test::Fixture fx{"conv2d"};
    std::string p = GetParam() + ".";
    std::vector<double> x = fx.get(p + "x"), w = fx.get(p + "w"), b = fx.get(p + "b"),
                        dy = fx.get(p + "dy");
    std::vector<int64_t> geometry = fx.get_int(p + "geometry");
    int64_t B = fx.shape(p + "x")[0];
    Conv2dShape s{.in_channels = fx.shape(p + "x")[3],
                  .out_channels = fx.shape(p + "w")[0],
                  .kernel = fx.shape(p + "w")[2],
                  .stride = geometry[0],
                  .padding = geometry[1],
                  .height = fx.shape(p + "x")[1],
                  .width = fx.shape(p + "x")[2]};
};

TEST_P(Conv2dFixture, DoubleMatchesTorch) {
    std::vector<double> y(out_size(s, B));
    nn::conv2d_forward(y.data(), x.data(), w.data(), b.data(), B, s);
    EXPECT_TRUE(test::all_close(y, fx.get(p + "y"), 1e-12, 1e-12));
    nn::conv2d_forward(y.data(), x.data(), w.data(), nullptr, B, s);
    EXPECT_TRUE(test::all_close(y, fx.get(p + "y_nobias"), 1e-12, 1e-12));
    std::vector<double> dx(x.size(), 0.0), dw(w.size(), 0.0), db(b.size(), 0.0);
    nn::conv2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), B, s);
    EXPECT_TRUE(test::all_close(dx, fx.get(p + "dx"), 1e-12, 1e-12));
    EXPECT_TRUE(test::all_close(dw, fx.get(p + "dw"), 1e-12, 1e-12));
    EXPECT_TRUE(test::all_close(db, fx.get(p + "db"), 1e-12, 1e-12));
}

TEST_P(Conv2dFixture, FloatMatchesTorch) {
    // Sums of up to ~400 products of normals (|terms| up to ~16), each input rounded to float.
    const double atol = 4e-5, rtol = 64 * kEpsF;
    auto xf = test::to_f32(x), wf = test::to_f32(w), bf = test::to_f32(b), dyf = test::to_f32(dy);
    for (auto layout : {Conv2dLayout::plain, Conv2dLayout::any_weights, Conv2dLayout::any}) {
        Conv2d conv(s, layout);
        SCOPED_TRACE(conv.implementations(B));
        std::vector<float> y(out_size(s, B));
        conv.forward(y.data(), xf.data(), wf.data(), bf.data(), B);
        EXPECT_TRUE(test::all_close(y, fx.get(p + "y"), atol, rtol));
        conv.forward(y.data(), xf.data(), wf.data(), nullptr, B);
        EXPECT_TRUE(test::all_close(y, fx.get(p + "y_nobias"), atol, rtol));
        std::vector<float> dx(x.size(), 0.0f), dw(w.size(), 0.0f), db(b.size(), 0.0f);
        conv.backward(dx.data(), dw.data(), db.data(), dyf.data(), xf.data(), wf.data(), B);
        EXPECT_TRUE(test::all_close(dx, fx.get(p + "dx"), atol, rtol));
        EXPECT_TRUE(test::all_close(dw, fx.get(p + "dw"), atol, rtol));
        EXPECT_TRUE(test::all_close(db, fx.get(p + "db"), atol, rtol));
    }
}

INSTANTIATE_TEST_SUITE_P(Torch, Conv2dFixture,
                         ::testing::Values("same", "stride2", "wide", "patch"));

// ---- timing (disabled: run with --gtest_also_run_disabled_tests) ----

// GFLOP/s of forward and backward for the vision recipe's shapes at batch 128, in each
// layout, beside oneDNN's sgemm rate for the same FLOPs (the im2col GEMM) in the same run.
// A print, not an assertion: tells whether oneDNN picked a good kernel on this CPU.
TEST(Conv2dTiming, DISABLED_Rates) {
    const int64_t B = 128;
    const Conv2dShape shapes[] = {
        {.in_channels = 1,
         .out_channels = 32,
         .kernel = 3,
         .padding = 1,
         .height = 28,
         .width = 28},
        {.in_channels = 32,
         .out_channels = 64,
         .kernel = 3,
         .padding = 1,
         .height = 14,
         .width = 14},
        {.in_channels = 64,
         .out_channels = 128,
         .kernel = 3,
         .padding = 1,
         .height = 7,
         .width = 7},
        {.in_channels = 32,
         .out_channels = 64,
         .kernel = 3,
         .padding = 1,
         .height = 28,
         .width = 28},
        {.in_channels = 1, .out_channels = 64, .kernel = 4, .stride = 4, .height = 28, .width = 28},
    };
    // Best of `reps` timed runs after one warm-up (the machine is shared).
    auto best = [](int reps, auto&& fn) {
        fn();
        double t = 1e30;
        for (int r = 0; r < reps; ++r) {
            Timer timer;
            fn();
            t = std::min(t, timer.seconds());
        }
        return t;
    };
    for (const Conv2dShape& s : shapes) {
        const auto in = test::random_normal_f32(in_size(s, B), 1);
        const auto w = test::random_normal_f32(w_size(s), 2);
        const auto b = test::random_normal_f32(size_t(s.out_channels), 3);
        const auto dy = test::random_normal_f32(out_size(s, B), 4);
        std::vector<float> y(out_size(s, B)), d_in(in.size()), d_w(w.size()), d_b(b.size());
        const int64_t M = B * s.out_height() * s.out_width(), N = s.out_channels,
                      Kd = s.in_channels * s.kernel * s.kernel;
        const double flops = 2.0 * double(M) * double(N) * double(Kd);
        const bool first_layer = s.in_channels == 1;  // no input gradient
        std::vector<float> A(size_t(M * Kd), 0.5f), C(size_t(M * N));
        const double t_gemm = best(5, [&] {
            kernels::gemm(false, true, M, N, Kd, 1.0f, A.data(), Kd, w.data(), Kd, 0.0f, C.data(),
                          N);
        });
        std::printf("%s, batch %ld: sgemm %ldx%ldx%ld %.1f GFLOP/s\n", s.str().c_str(), long(B),
                    long(M), long(N), long(Kd), flops / t_gemm * 1e-9);
        // plain is left out: oneDNN 2.6 has only its reference kernels for NHWC with OIHW
        // weights ("ref:any"), 100-1000x slower.
        for (auto layout : {Conv2dLayout::any_weights, Conv2dLayout::any}) {
            Conv2d conv(s, layout);
            const double t_f =
                best(10, [&] { conv.forward(y.data(), in.data(), w.data(), b.data(), B); });
            const double t_b = best(10, [&] {
                conv.backward(first_layer ? nullptr : d_in.data(), d_w.data(), d_b.data(),
                              dy.data(), in.data(), w.data(), B);
            });
            const double bwd_flops = first_layer ? flops : 2 * flops;
            std::printf("  %-11s fwd %7.1f GFLOP/s (%.2f ms)  bwd %7.1f GFLOP/s (%.2f ms)  [%s]\n",
                        layout == Conv2dLayout::plain         ? "plain"
                        : layout == Conv2dLayout::any_weights ? "any_weights"
                                                              : "any",
                        flops / t_f * 1e-9, t_f * 1e3, bwd_flops / t_b * 1e-9, t_b * 1e3,
                        conv.implementations(B).c_str());
        }
    }
}

}  // namespace
}  // namespace moe
