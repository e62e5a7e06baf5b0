// Losses: cross-entropy (with ignored rows), BCE with logits and MSE. Every backward by
// finite differences in double and against PyTorch (cross_entropy(ignore_index=-1),
// binary_cross_entropy_with_logits, mse_loss) in double and on the float path; plus the
// edge cases: logits of 1e4, every row ignored, bad targets, probs aliasing logits, the
// float path at a size where rows run in parallel, and a loss that does not depend on the
// thread count.
#include <cmath>
#include <limits>
#include <string>

#include "core/threads.h"
#include "nn/loss.h"
#include "test_support.h"

namespace moe {
namespace {

constexpr double kEpsF = std::numeric_limits<float>::epsilon();

// ---- cross-entropy ----

class CrossEntropyGradient : public ::testing::Test {
  protected:
    const int64_t N = 6, V = 7;
    std::vector<double> logits = test::random_normal(size_t(N * V), 1, 2.0);
    const std::vector<int32_t> targets = {2, -1, 6, 0, -1, 2};  // rows 1 and 4 are ignored
    std::vector<double> probs = std::vector<double>(size_t(N * V));

    double loss() {
        return nn::cross_entropy_forward(probs.data(), logits.data(), targets.data(), N, V);
    }
};

TEST_F(CrossEntropyGradient, MatchesFiniteDifferencesAndIgnoresRows) {
    auto L = [&] { return loss(); };
    const auto numeric = test::numeric_gradient(L, logits.data(), logits.size());
    loss();
    std::vector<double> d_logits(logits.size(), 0.0);
    nn::cross_entropy_backward(d_logits.data(), probs.data(), targets.data(), N, V);
    EXPECT_TRUE(test::all_close(d_logits, numeric, 1e-8, 1e-7));
    for (int64_t v = 0; v < V; ++v) {
        EXPECT_EQ(d_logits[size_t(1 * V + v)], 0.0);
        EXPECT_EQ(d_logits[size_t(4 * V + v)], 0.0);
    }
}

TEST_F(CrossEntropyGradient, ValueIsTheMeanOverCountedRows) {
    const double got = loss();
    double want = 0;
    for (int64_t n = 0; n < N; ++n) {
        if (targets[size_t(n)] < 0) continue;
        double sum = 0;
        for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[size_t(n * V + v)]);
        want += std::log(sum) - logits[size_t(n * V + targets[size_t(n)])];
    }
    EXPECT_NEAR(got, want / 4, 1e-13);  // 4 counted rows of 6
    for (int64_t n = 0; n < N; ++n) {
        double row = 0;
        for (int64_t v = 0; v < V; ++v) row += probs[size_t(n * V + v)];
        EXPECT_NEAR(row, 1.0, 1e-15);
    }
}

TEST_F(CrossEntropyGradient, BackwardAccumulatesAndScalesByDLoss) {
    loss();
    std::vector<double> once(logits.size(), 0.0), twice(logits.size(), 0.0),
        scaled(logits.size(), 0.0);
    nn::cross_entropy_backward(once.data(), probs.data(), targets.data(), N, V);
    for (int k = 0; k < 2; ++k)
        nn::cross_entropy_backward(twice.data(), probs.data(), targets.data(), N, V);
    nn::cross_entropy_backward(scaled.data(), probs.data(), targets.data(), N, V, 2.0);
    for (auto& v : once) v *= 2;
    EXPECT_EQ(twice, once);
    EXPECT_TRUE(test::all_close(scaled, once, 1e-16, 1e-15));
}

TEST_F(CrossEntropyGradient, ProbsMayAliasLogits) {
    const double separate = loss();
    const auto want_probs = probs;
    std::vector<double> inplace = logits;
    const double aliased =
        nn::cross_entropy_forward(inplace.data(), inplace.data(), targets.data(), N, V);
    EXPECT_EQ(aliased, separate);
    EXPECT_EQ(inplace, want_probs);
    // And the float path.
    auto lf = test::to_f32(logits);
    std::vector<float> pf(lf.size());
    const double f_separate = nn::cross_entropy_forward(pf.data(), lf.data(), targets.data(), N, V);
    const double f_aliased = nn::cross_entropy_forward(lf.data(), lf.data(), targets.data(), N, V);
    EXPECT_EQ(f_aliased, f_separate);
    EXPECT_EQ(lf, pf);
}

TEST(CrossEntropy, HugeLogitsStayFinite) {
    // Row 0: [1e4, 1e4 - 1, -1e4], target 1: loss = 1 + log(1 + e^-1) (the -1e4 term is
    // e^-2e4 = 0). Row 1: target on the -1e4 logit: loss = 2e4 + log(1 + e^-1).
    const std::vector<double> logits = {1e4, 1e4 - 1, -1e4, 1e4, 1e4 - 1, -1e4};
    const std::vector<int32_t> targets = {1, 2};
    const double want = (1 + std::log1p(std::exp(-1.0)) + 2e4 + std::log1p(std::exp(-1.0))) / 2;
    std::vector<double> probs(6), d(6, 0.0);
    const double loss =
        nn::cross_entropy_forward(probs.data(), logits.data(), targets.data(), 2, 3);
    EXPECT_NEAR(loss, want, 1e-9);
    nn::cross_entropy_backward(d.data(), probs.data(), targets.data(), 2, 3);
    const double p0 = 1 / (1 + std::exp(-1.0));
    EXPECT_TRUE(test::all_close(d, {p0 / 2, (1 - p0 - 1) / 2, 0, p0 / 2, (1 - p0) / 2, -0.5}, 1e-15,
                                1e-12));

    const auto lf = test::to_f32(logits);
    std::vector<float> pf(6), df(6, 0.0f);
    const double loss_f = nn::cross_entropy_forward(pf.data(), lf.data(), targets.data(), 2, 3);
    EXPECT_TRUE(std::isfinite(loss_f));
    EXPECT_NEAR(loss_f, want, 1e-3);  // 1e4 - 1 is exact in float; the rest within ~1 ulp
    nn::cross_entropy_backward(df.data(), pf.data(), targets.data(), 2, 3);
    for (float v : df) EXPECT_TRUE(std::isfinite(v));
    EXPECT_TRUE(test::all_close(test::to_f64(df), d, 1e-7, 1e-6));
}

TEST(CrossEntropy, EveryRowIgnoredGivesZero) {
    const std::vector<float> logits = {1, 2, 3, 4, 5, 6};
    const std::vector<int32_t> targets = {-1, -1};
    std::vector<float> probs(6), d(6, 0.25f);
    EXPECT_EQ(nn::cross_entropy_forward(probs.data(), logits.data(), targets.data(), 2, 3), 0.0);
    nn::cross_entropy_backward(d.data(), probs.data(), targets.data(), 2, 3);
    EXPECT_EQ(d, std::vector<float>(6, 0.25f));
}

TEST(CrossEntropy, TargetOutsideRangeIsAnErrorNamingRowAndValue) {
    const std::vector<double> logits(12, 0.5);
    std::vector<double> probs(12), d(12, 0.0);
    const std::vector<int32_t> too_big = {0, 3, 4, 1};  // V = 3
    std::string msg = test::error_of(
        [&] { nn::cross_entropy_forward(probs.data(), logits.data(), too_big.data(), 4, 3); });
    EXPECT_NE(msg.find("target 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("row 1"), std::string::npos) << msg;
    const std::vector<int32_t> below = {0, 1, -2, 1};
    msg = test::error_of(
        [&] { nn::cross_entropy_backward(d.data(), probs.data(), below.data(), 4, 3, 1.0); });
    EXPECT_NE(msg.find("target -2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("row 2"), std::string::npos) << msg;
    EXPECT_EQ(d, std::vector<double>(12, 0.0));
}

// 4096 x 64 logits (above the 32768 threshold, so rows are split over threads): the float
// path against the double path, and the loss bit for bit the same for 1 and 2 threads.
TEST(CrossEntropy, ParallelFloatPathMatchesDoubleAndIsDeterministic) {
    const int64_t N = 64, V = 4096;
    // The double reference runs on the float-rounded logits, so the comparison measures the
    // float kernel alone.
    const auto lf = test::random_normal_f32(size_t(N * V), 7, 3.0f);
    const auto logits = test::to_f64(lf);
    std::vector<int32_t> targets(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) targets[size_t(n)] = n % 5 == 0 ? -1 : int32_t(n * 61 % V);
    std::vector<double> probs(logits.size()), d(logits.size(), 0.0);
    const double loss =
        nn::cross_entropy_forward(probs.data(), logits.data(), targets.data(), N, V);
    nn::cross_entropy_backward(d.data(), probs.data(), targets.data(), N, V);

    std::vector<float> pf(lf.size()), df(lf.size(), 0.0f);
    const int saved_threads = num_threads();
    set_num_threads(1);
    const double loss_1 = nn::cross_entropy_forward(pf.data(), lf.data(), targets.data(), N, V);
    const auto probs_1 = pf;
    set_num_threads(2);
    const double loss_2 = nn::cross_entropy_forward(pf.data(), lf.data(), targets.data(), N, V);
    nn::cross_entropy_backward(df.data(), pf.data(), targets.data(), N, V);
    set_num_threads(saved_threads);
    EXPECT_EQ(loss_1, loss_2);
    EXPECT_EQ(probs_1, pf);
    // The loss (~9) is the log of a double sum of ~1 ulp float exps: within a few ulp.
    EXPECT_NEAR(loss_2, loss, 4 * kEpsF * loss);
    // Probabilities: the float exp (~1 ulp), the float x - max (~1 ulp of |x - max| <= 30,
    // which moves exp by up to 30 * eps / 2) and the scaling: within 16 ulp relative.
    EXPECT_TRUE(test::all_close(pf, probs, 1e-30, 16 * kEpsF));
    EXPECT_TRUE(test::all_close(df, d, 1e-30, 16 * kEpsF));
}

// ---- BCE with logits ----

TEST(BceWithLogits, MatchesFiniteDifferencesAndAccumulates) {
    const size_t N = 9;
    auto z = test::random_normal(N, 11, 3.0);
    auto y = test::random_normal(N, 12);
    for (auto& t : y) t = 1 / (1 + std::exp(-t));  // soft targets in (0, 1)
    y[0] = 0, y[1] = 1;
    auto L = [&] { return nn::bce_with_logits_forward(z.data(), y.data(), int64_t(N)); };
    const auto numeric = test::numeric_gradient(L, z.data(), N);
    std::vector<double> d(N, 0.0), twice(N, 0.0);
    nn::bce_with_logits_backward(d.data(), z.data(), y.data(), int64_t(N));
    EXPECT_TRUE(test::all_close(d, numeric, 1e-8, 1e-7));
    for (int k = 0; k < 2; ++k)
        nn::bce_with_logits_backward(twice.data(), z.data(), y.data(), int64_t(N));
    for (auto& v : d) v *= 2;
    EXPECT_EQ(twice, d);
}

TEST(BceWithLogits, ExtremeLogitsAreStable) {
    // z = +-100 and +-1e4: exp(1e4) would overflow; the stable form gives |z| exactly.
    const std::vector<double> z = {100, -100, 1e4, -1e4};
    const std::vector<double> y = {0, 1, 0, 1};
    EXPECT_NEAR(nn::bce_with_logits_forward(z.data(), y.data(), 4), (100 + 100 + 1e4 + 1e4) / 4,
                1e-9);
    std::vector<double> d(4, 0.0);
    nn::bce_with_logits_backward(d.data(), z.data(), y.data(), 4);
    EXPECT_TRUE(test::all_close(d, {0.25, -0.25, 0.25, -0.25}, 1e-15, 1e-12));
    const auto zf = test::to_f32(z), yf = test::to_f32(y);
    EXPECT_NEAR(nn::bce_with_logits_forward(zf.data(), yf.data(), 4), (200 + 2e4) / 4, 1e-6);
    std::vector<float> df(4, 0.0f);
    nn::bce_with_logits_backward(df.data(), zf.data(), yf.data(), 4);
    EXPECT_EQ(df, (std::vector<float>{0.25f, -0.25f, 0.25f, -0.25f}));
}

// ---- MSE ----

TEST(Mse, MatchesFiniteDifferencesAndAccumulates) {
    const size_t N = 8;
    auto p = test::random_normal(N, 21), t = test::random_normal(N, 22);
    auto L = [&] { return nn::mse_forward(p.data(), t.data(), int64_t(N)); };
    double want = 0;
    for (size_t i = 0; i < N; ++i) want += (p[i] - t[i]) * (p[i] - t[i]) / double(N);
    EXPECT_NEAR(L(), want, 1e-15);
    const auto numeric = test::numeric_gradient(L, p.data(), N);
    std::vector<double> d(N, 0.0), twice(N, 0.0);
    nn::mse_backward(d.data(), p.data(), t.data(), int64_t(N));
    EXPECT_TRUE(test::all_close(d, numeric, 1e-8, 1e-7));
    for (int k = 0; k < 2; ++k) nn::mse_backward(twice.data(), p.data(), t.data(), int64_t(N));
    for (auto& v : d) v *= 2;
    EXPECT_EQ(twice, d);
}

// ---- PyTorch ----

class LossFixture : public ::testing::Test {
  protected:
    test::Fixture fx{"loss"};
    const double d_loss = fx.get("d_loss")[0];
};

TEST_F(LossFixture, CrossEntropyMatchesTorch) {
    const auto logits = fx.get("ce_logits");
    const auto t64 = fx.get_int("ce_targets");
    const std::vector<int32_t> targets(t64.begin(), t64.end());
    const int64_t N = fx.shape("ce_logits")[0], V = fx.shape("ce_logits")[1];
    const double want_loss = fx.get("ce_loss")[0];

    std::vector<double> probs(logits.size()), d(logits.size(), 0.0);
    EXPECT_NEAR(nn::cross_entropy_forward(probs.data(), logits.data(), targets.data(), N, V),
                want_loss, 1e-13);
    EXPECT_TRUE(test::all_close(probs, fx.get("ce_probs"), 1e-15, 1e-13));
    nn::cross_entropy_backward(d.data(), probs.data(), targets.data(), N, V, d_loss);
    EXPECT_TRUE(test::all_close(d, fx.get("ce_d_logits"), 1e-15, 1e-13));

    const auto lf = test::to_f32(logits);
    std::vector<float> pf(lf.size()), df(lf.size(), 0.0f);
    EXPECT_NEAR(nn::cross_entropy_forward(pf.data(), lf.data(), targets.data(), N, V), want_loss,
                16 * kEpsF * want_loss);
    EXPECT_TRUE(test::all_close(pf, fx.get("ce_probs"), 1e-9, 16 * kEpsF));
    nn::cross_entropy_backward(df.data(), pf.data(), targets.data(), N, V, float(d_loss));
    EXPECT_TRUE(test::all_close(df, fx.get("ce_d_logits"), 1e-9, 16 * kEpsF));
}

TEST_F(LossFixture, BceWithLogitsMatchesTorch) {
    const auto z = fx.get("bce_logits"), y = fx.get("bce_targets");
    const int64_t N = int64_t(z.size());
    const double want_loss = fx.get("bce_loss")[0];
    EXPECT_NEAR(nn::bce_with_logits_forward(z.data(), y.data(), N), want_loss, 1e-14);
    std::vector<double> d(z.size(), 0.0);
    nn::bce_with_logits_backward(d.data(), z.data(), y.data(), N, d_loss);
    EXPECT_TRUE(test::all_close(d, fx.get("bce_d_logits"), 1e-16, 1e-13));

    const auto zf = test::to_f32(z), yf = test::to_f32(y);
    EXPECT_NEAR(nn::bce_with_logits_forward(zf.data(), yf.data(), N), want_loss,
                16 * kEpsF * want_loss);
    std::vector<float> df(z.size(), 0.0f);
    nn::bce_with_logits_backward(df.data(), zf.data(), yf.data(), N, float(d_loss));
    EXPECT_TRUE(test::all_close(df, fx.get("bce_d_logits"), 1e-8, 16 * kEpsF));
}

TEST_F(LossFixture, MseMatchesTorch) {
    const auto p = fx.get("mse_pred"), t = fx.get("mse_target");
    const int64_t N = int64_t(p.size());
    const double want_loss = fx.get("mse_loss")[0];
    EXPECT_NEAR(nn::mse_forward(p.data(), t.data(), N), want_loss, 1e-14);
    std::vector<double> d(p.size(), 0.0);
    nn::mse_backward(d.data(), p.data(), t.data(), N, d_loss);
    EXPECT_TRUE(test::all_close(d, fx.get("mse_d_pred"), 1e-16, 1e-13));

    const auto pf = test::to_f32(p), tf = test::to_f32(t);
    EXPECT_NEAR(nn::mse_forward(pf.data(), tf.data(), N), want_loss, 16 * kEpsF * want_loss);
    std::vector<float> df(p.size(), 0.0f);
    nn::mse_backward(df.data(), pf.data(), tf.data(), N, float(d_loss));
    EXPECT_TRUE(test::all_close(df, fx.get("mse_d_pred"), 1e-7, 16 * kEpsF));
}

}  // namespace
}  // namespace moe
