// Per-task metrics (tabular/task_metrics.h) against their plain definitions: AUC against
// the O(n^2) count over every (positive, negative) pair, MSE and log loss against the
// formulas, with strides over a row-major [n, K] matrix.
#include "tabular/task_metrics.h"

#include <cmath>

#include "core/rng.h"
#include "test_support.h"

namespace moe::tabular {
namespace {

// P(score of a positive > score of a negative) + 1/2 P(equal), over every pair.
double auc_pairs(const std::vector<float>& s, const std::vector<float>& y) {
    double u = 0, pairs = 0;
    for (size_t i = 0; i < s.size(); ++i)
        for (size_t j = 0; j < s.size(); ++j) {
            if (y[i] != 1.0f || y[j] != 0.0f) continue;
            pairs += 1;
            u += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
        }
    return pairs == 0 ? std::nan("") : u / pairs;
}

TEST(Auc, MatchesThePairwiseCountWithTies) {
    Rng rng(7);
    for (int64_t n : {2, 3, 5, 10, 37, 100, 500}) {
        // levels: how many distinct scores; few levels give many ties.
        for (uint64_t levels : {2ull, 5ull, 50ull, 1000000ull}) {
            std::vector<float> s(static_cast<size_t>(n)), y(static_cast<size_t>(n));
            for (int64_t i = 0; i < n; ++i) {
                s[size_t(i)] = float(rng.below(levels)) / float(levels);
                y[size_t(i)] = float(rng.below(3) == 0);  // about a third positive
            }
            y[0] = 1.0f, y[1] = 0.0f;  // both classes present
            EXPECT_NEAR(auc(s.data(), y.data(), n), auc_pairs(s, y), 1e-12)
                << "n = " << n << ", levels = " << levels;
        }
    }
}

TEST(Auc, KnownValues) {
    const std::vector<float> y = {0, 0, 1, 1, 0, 1};
    const std::vector<float> perfect = {0.1f, 0.2f, 0.8f, 0.9f, 0.3f, 0.7f};
    EXPECT_DOUBLE_EQ(auc(perfect.data(), y.data(), 6), 1.0);
    std::vector<float> reversed(perfect);
    for (float& v : reversed) v = -v;
    EXPECT_DOUBLE_EQ(auc(reversed.data(), y.data(), 6), 0.0);
    const std::vector<float> equal(6, 0.5f);
    EXPECT_DOUBLE_EQ(auc(equal.data(), y.data(), 6), 0.5);
    // Any monotone transform of the scores gives the same AUC.
    std::vector<float> logits(perfect);
    for (float& v : logits) v = std::log(v / (1 - v));
    EXPECT_DOUBLE_EQ(auc(logits.data(), y.data(), 6), 1.0);
}

TEST(Auc, OneClassOrNaNScoresGiveNaN) {
    const std::vector<float> s = {0.1f, 0.5f, 0.9f};
    const std::vector<float> ones = {1, 1, 1}, zeros = {0, 0, 0}, mixed = {0, 1, 0};
    EXPECT_TRUE(std::isnan(auc(s.data(), ones.data(), 3)));
    EXPECT_TRUE(std::isnan(auc(s.data(), zeros.data(), 3)));
    EXPECT_TRUE(std::isnan(auc(s.data(), mixed.data(), 0)));
    const std::vector<float> with_nan = {0.1f, std::nanf(""), 0.9f};
    EXPECT_TRUE(std::isnan(auc(with_nan.data(), mixed.data(), 3)));
    const std::vector<float> bad = {0, 2, 1};
    EXPECT_TRUE(test::throws_error_with([&] { auc(s.data(), bad.data(), 3); }, {"label 1", "2"}));
}

TEST(Auc, StrideReadsOneColumnOfAMatrix) {
    // [n, K] with K = 3: column 1 holds the task; the other columns are noise that would
    // change the result if read.
    const int64_t n = 200, K = 3;
    Rng rng(3);
    std::vector<float> s(static_cast<size_t>(n * K)), y(static_cast<size_t>(n * K)),
        col_s(static_cast<size_t>(n)), col_y(static_cast<size_t>(n));
    for (int64_t i = 0; i < n * K; ++i) {
        s[size_t(i)] = float(rng.below(20));
        y[size_t(i)] = float(rng.below(2));
    }
    for (int64_t i = 0; i < n; ++i)
        col_s[size_t(i)] = s[size_t(i * K + 1)], col_y[size_t(i)] = y[size_t(i * K + 1)];
    EXPECT_NEAR(auc(s.data() + 1, y.data() + 1, n, K), auc_pairs(col_s, col_y), 1e-12);
    EXPECT_NEAR(mse(s.data() + 1, y.data() + 1, n, K), mse(col_s.data(), col_y.data(), n), 1e-12);
}

TEST(Mse, MatchesTheFormula) {
    const std::vector<float> p = {1.0f, 2.5f, -1.0f, 0.0f}, t = {0.5f, 2.5f, 1.0f, 3.0f};
    EXPECT_NEAR(mse(p.data(), t.data(), 4), (0.25 + 0 + 4 + 9) / 4.0, 1e-12);
    EXPECT_TRUE(std::isnan(mse(p.data(), t.data(), 0)));
}

TEST(LogLoss, MatchesTheFormulaAndClamps) {
    const std::vector<float> p = {0.9f, 0.2f, 0.6f}, y = {1, 0, 0};
    const double want =
        -(std::log(double(0.9f)) + std::log(1 - double(0.2f)) + std::log(1 - double(0.6f))) / 3;
    EXPECT_NEAR(log_loss(p.data(), y.data(), 3), want, 1e-12);
    // Certain and wrong: clamped to 1e-7, so -log(1e-7), not infinity.
    const std::vector<float> sure = {0.0f, 1.0f}, wrong = {1, 0};
    EXPECT_NEAR(log_loss(sure.data(), wrong.data(), 2), -std::log(1e-7), 1e-9);
    const std::vector<float> right = {0, 1};
    EXPECT_NEAR(log_loss(sure.data(), right.data(), 2), -std::log(1 - 1e-7), 1e-12);
}

}  // namespace
}  // namespace moe::tabular
