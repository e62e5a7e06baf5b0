// MaxPool2d: the oneDNN float path against the reference (bit for bit, with ties), both
// against torch.nn.functional.max_pool2d fixtures, finite differences on the double
// reference, the workspace, accumulation, batch-size caching and shape errors.
#include <algorithm>
#include <cmath>
#include <limits>

#include "nn/pool2d.h"
#include "test_support.h"

namespace moe {
namespace {

using nn::MaxPool2d;
using nn::Pool2dShape;

size_t in_size(const Pool2dShape& s, int64_t B) {
    return size_t(B * s.height * s.width * s.channels);
}
size_t out_size(const Pool2dShape& s, int64_t B) {
    return size_t(B * s.out_height() * s.out_width() * s.channels);
}
// Multiples of 1/4 in [-1.5, 1.5]: windows hold ties, and sums of them are exact.
std::vector<float> quantized(size_t n, uint64_t seed) {
    auto v = test::random_normal_f32(n, seed);
    for (float& x : v) x = std::clamp(std::round(x * 4.0f), -6.0f, 6.0f) / 4.0f;
    return v;
}

TEST(Pool2dShape, OutputSizesAndErrors) {
    Pool2dShape s{.channels = 3, .kernel = 3, .stride = 2, .height = 7, .width = 6};
    EXPECT_EQ(s.out_height(), 3);
    EXPECT_EQ(s.out_width(), 2);
    Pool2dShape big{.channels = 2, .kernel = 3, .stride = 1, .height = 2, .width = 5};
    EXPECT_TRUE(test::throws_error_with([&] { MaxPool2d p(big); },
                                        {"max_pool2d: kernel 3 larger than input 2x5"}));
    std::vector<float> buf(100);
    EXPECT_TRUE(test::throws_error_with(
        [&] { nn::max_pool2d_forward_reference(buf.data(), buf.data(), 1, big); },
        {"max_pool2d_forward_reference: kernel 3", "in 2x2x5"}));
    for (auto bad : {Pool2dShape{.channels = 0, .kernel = 1, .stride = 1, .height = 2, .width = 2},
                     Pool2dShape{.channels = 1, .kernel = 2, .stride = 0, .height = 2, .width = 2},
                     Pool2dShape{.channels = 1, .kernel = 0, .stride = 1, .height = 2, .width = 2}})
        EXPECT_TRUE(
            test::throws_error_with([&] { MaxPool2d p(bad); }, {"max_pool2d: ", bad.str()}));
    MaxPool2d ok(s);
    EXPECT_TRUE(test::throws_error_with([&] { ok.backward(buf.data(), buf.data(), nullptr, 1); },
                                        {"max_pool2d: backward needs the workspace"}));
}

TEST(Pool2dGradient, ReferenceMatchesFiniteDifferences) {
    // Distinct values (normals), so the max is locally smooth.
    const Pool2dShape s{.channels = 2, .kernel = 3, .stride = 2, .height = 7, .width = 6};
    const int64_t B = 2;
    auto in = test::random_normal(in_size(s, B), 1);
    const auto dy = test::random_normal(out_size(s, B), 2);
    std::vector<double> y(out_size(s, B));
    auto L = [&] {
        nn::max_pool2d_forward(y.data(), in.data(), B, s);
        return test::weighted_sum(y, dy);
    };
    const auto num = test::numeric_gradient(L, in.data(), in.size());
    std::vector<double> d_in(in.size(), 0.0);
    nn::max_pool2d_backward(d_in.data(), dy.data(), in.data(), B, s);
    EXPECT_TRUE(test::all_close(d_in, num, 1e-8, 1e-7));
}

void compare_with_reference(const Pool2dShape& s, int64_t B, uint64_t seed) {
    SCOPED_TRACE(s.str() + " B=" + std::to_string(B));
    MaxPool2d pool(s);
    const auto in = quantized(in_size(s, B), seed);
    const auto dy = quantized(out_size(s, B), seed + 1);
    std::vector<float> y(out_size(s, B)), y_ref(y.size()), y_inf(y.size());
    std::vector<unsigned char> ws(pool.workspace_bytes(B));
    pool.forward(y.data(), ws.data(), in.data(), B);
    pool.forward(y_inf.data(), nullptr, in.data(), B);
    nn::max_pool2d_forward_reference(y_ref.data(), in.data(), B, s);
    EXPECT_EQ(y, y_ref);
    EXPECT_EQ(y_inf, y_ref);
    // Gradients are sums of a few multiples of 1/4: exact in any order.
    std::vector<float> d_in(in.size(), 0.0f), d_ref(in.size(), 0.0f);
    pool.backward(d_in.data(), dy.data(), ws.data(), B);
    nn::max_pool2d_backward_reference(d_ref.data(), dy.data(), in.data(), B, s);
    EXPECT_EQ(d_in, d_ref);
}

TEST(MaxPool2dFloat, MatchesReferenceWithTiesOverShapes) {
    uint64_t seed = 10;
    for (int64_t c : {1, 3, 16, 17})
        for (auto [k, st] : {std::pair<int64_t, int64_t>{2, 2}, {3, 2}, {3, 1}, {2, 3}})
            for (auto [h, w] : {std::pair<int64_t, int64_t>{7, 7}, {8, 5}, {28, 28}})
                compare_with_reference(
                    {.channels = c, .kernel = k, .stride = st, .height = h, .width = w}, 1 + c % 3,
                    seed += 2);
}

class MaxPool2dBehaviour : public ::testing::Test {
  protected:
    Pool2dShape s{.channels = 8, .kernel = 2, .stride = 2, .height = 9, .width = 8};
    MaxPool2d pool{s};
    static constexpr int64_t B = 3;
    std::vector<float> in = test::random_normal_f32(in_size(s, B), 1);
    std::vector<float> dy = test::random_normal_f32(out_size(s, B), 2);
};

TEST_F(MaxPool2dBehaviour, BackwardAccumulates) {
    std::vector<float> y(out_size(s, B)), d_in(in.size(), 0.0f);
    std::vector<unsigned char> ws(pool.workspace_bytes(B));
    pool.forward(y.data(), ws.data(), in.data(), B);
    pool.backward(d_in.data(), dy.data(), ws.data(), B);
    auto acc = test::random_normal_f32(in.size(), 3), expect = acc;
    for (size_t i = 0; i < acc.size(); ++i) expect[i] += d_in[i];
    pool.backward(acc.data(), dy.data(), ws.data(), B);
    EXPECT_EQ(acc, expect);
}

// accumulate = false writes every element of d_in: the window maxima get d_out, the rest 0,
// including row 8 of the 9 rows, which no 2x2 window covers. Garbage (NaN) before the call
// must not survive, and the result is the accumulating one's on zeros, bit for bit.
TEST_F(MaxPool2dBehaviour, BackwardCanOverwrite) {
    std::vector<float> y(out_size(s, B)), d_in(in.size(), 0.0f);
    std::vector<unsigned char> ws(pool.workspace_bytes(B));
    pool.forward(y.data(), ws.data(), in.data(), B);
    pool.backward(d_in.data(), dy.data(), ws.data(), B);
    std::vector<float> over(in.size(), std::numeric_limits<float>::quiet_NaN());
    pool.backward(over.data(), dy.data(), ws.data(), B, false);
    EXPECT_EQ(over, d_in);
}

TEST_F(MaxPool2dBehaviour, WorkspacesOfTwoForwardsAreIndependent) {
    // Two forwards before their backwards (micro-batches): each backward uses its own
    // caller-owned workspace.
    const auto in2 = test::random_normal_f32(in.size(), 9);
    std::vector<float> y(out_size(s, B)), d1(in.size(), 0.0f), d2(in.size(), 0.0f),
        r1(in.size(), 0.0f), r2(in.size(), 0.0f);
    std::vector<unsigned char> ws1(pool.workspace_bytes(B)), ws2(ws1.size());
    pool.forward(y.data(), ws1.data(), in.data(), B);
    pool.forward(y.data(), ws2.data(), in2.data(), B);
    pool.backward(d1.data(), dy.data(), ws1.data(), B);
    pool.backward(d2.data(), dy.data(), ws2.data(), B);
    nn::max_pool2d_backward_reference(r1.data(), dy.data(), in.data(), B, s);
    nn::max_pool2d_backward_reference(r2.data(), dy.data(), in2.data(), B, s);
    EXPECT_EQ(d1, r1);
    EXPECT_EQ(d2, r2);
}

TEST_F(MaxPool2dBehaviour, NewBatchSizeWorksAndSameBatchGivesSameBits) {
    auto run = [&](int64_t batch) {
        std::vector<float> y(out_size(s, batch)), d_in(in_size(s, batch), 0.0f);
        std::vector<unsigned char> ws(pool.workspace_bytes(batch));
        pool.forward(y.data(), ws.data(), in.data(), batch);
        pool.backward(d_in.data(), dy.data(), ws.data(), batch);
        y.insert(y.end(), d_in.begin(), d_in.end());
        return y;
    };
    const auto first = run(B);
    run(1);
    run(2 * B);
    EXPECT_EQ(run(B), first);
    EXPECT_GT(pool.workspace_bytes(2 * B), pool.workspace_bytes(B));
}

// ---- PyTorch ----

class Pool2dFixture : public ::testing::TestWithParam<std::string> {
  protected:
    test::Fixture fx{"pool2d"};
    std::string p = GetParam() + ".";
    std::vector<double> x = fx.get(p + "x"), dy = fx.get(p + "dy");
    std::vector<int64_t> geometry = fx.get_int(p + "geometry");
    int64_t B = fx.shape(p + "x")[0];
    Pool2dShape s{.channels = fx.shape(p + "x")[3],
                  .kernel = geometry[0],
                  .stride = geometry[1],
                  .height = fx.shape(p + "x")[1],
                  .width = fx.shape(p + "x")[2]};
};

TEST_P(Pool2dFixture, DoubleMatchesTorch) {
    std::vector<double> y(out_size(s, B)), dx(x.size(), 0.0);
    nn::max_pool2d_forward_reference(y.data(), x.data(), B, s);
    EXPECT_EQ(y, fx.get(p + "y"));
    nn::max_pool2d_backward_reference(dx.data(), dy.data(), x.data(), B, s);
    EXPECT_TRUE(test::all_close(dx, fx.get(p + "dx"), 1e-15, 1e-15));
}

TEST_P(Pool2dFixture, FloatMatchesTorch) {
    const auto xf = test::to_f32(x), dyf = test::to_f32(dy);
    MaxPool2d pool(s);
    SCOPED_TRACE(pool.implementations(B));
    std::vector<float> y(out_size(s, B)), dx(x.size(), 0.0f);
    std::vector<unsigned char> ws(pool.workspace_bytes(B));
    pool.forward(y.data(), ws.data(), xf.data(), B);
    EXPECT_TRUE(test::all_close(y, fx.get(p + "y"), 0, 0));  // quarters: exact in float
    pool.backward(dx.data(), dyf.data(), ws.data(), B);
    // Each element receives at most a few float-rounded normals.
    EXPECT_TRUE(test::all_close(dx, fx.get(p + "dx"), 1e-6, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Torch, Pool2dFixture, ::testing::Values("k2s2", "k3s2", "k3s1"));

}  // namespace
}  // namespace moe
