// Next-token sampling: greedy cases, top-k and top-p truncation, and frequencies that follow
// the tempered softmax.
#include <cmath>
#include <map>

#include "lm/sampling.h"
#include "test_support.h"

namespace moe {
namespace {

TEST(Sampling, GreedyWhenTemperatureZeroOrTopKOne) {
    const std::vector<float> logits = {0.5f, 2.0f, 2.0f, -1.0f};
    std::vector<std::pair<float, int32_t>> work;
    Rng rng(1);
    lm::SamplingOptions o;
    o.temperature = 0;
    EXPECT_EQ(lm::sample_token(logits.data(), 4, o, rng, work), 1);  // first of the tie
    o.temperature = 1.0;
    o.top_k = 1;
    EXPECT_EQ(lm::sample_token(logits.data(), 4, o, rng, work), 1);
}

TEST(Sampling, FrequenciesFollowTheTemperedSoftmaxWithinTopK) {
    const std::vector<float> logits = {1.0f, 0.0f, 2.0f, -5.0f, 1.5f};
    std::vector<std::pair<float, int32_t>> work;
    Rng rng(7);
    lm::SamplingOptions o;
    o.temperature = 2.0;
    o.top_k = 3;  // keeps ids 2, 4, 0
    std::map<int32_t, int> counts;
    const int n = 60000;
    for (int i = 0; i < n; ++i) ++counts[lm::sample_token(logits.data(), 5, o, rng, work)];
    EXPECT_EQ(counts.count(1) + counts.count(3), 0u);
    const double z = std::exp(1.0) + std::exp(0.75) + std::exp(0.5);  // exp(l/2) of ids 2, 4, 0
    const std::map<int32_t, double> want = {
        {2, std::exp(1.0) / z}, {4, std::exp(0.75) / z}, {0, std::exp(0.5) / z}};
    for (const auto& [id, p] : want)  // binomial std error sqrt(p(1-p)/n) < 0.0021
        EXPECT_NEAR(double(counts[id]) / n, p, 0.01) << "id " << id;
}

TEST(Sampling, TopPKeepsTheSmallestSetReachingP) {
    // Probabilities at temperature 1: 0.6, 0.3, 0.1 (logits are their logs).
    const std::vector<float> logits = {std::log(0.3f), std::log(0.6f), std::log(0.1f)};
    std::vector<std::pair<float, int32_t>> work;
    Rng rng(3);
    lm::SamplingOptions o;
    o.temperature = 1.0;
    o.top_p = 0.85;  // 0.6 < 0.85 <= 0.9: ids 1 and 0 stay
    std::map<int32_t, int> counts;
    for (int i = 0; i < 30000; ++i) ++counts[lm::sample_token(logits.data(), 3, o, rng, work)];
    EXPECT_EQ(counts.count(2), 0u);
    EXPECT_NEAR(double(counts[1]) / 30000, 2.0 / 3.0, 0.015);
    o.top_p = 0.5;  // the top token alone reaches it
    for (int i = 0; i < 100; ++i)
        EXPECT_EQ(lm::sample_token(logits.data(), 3, o, rng, work), 1);
}

TEST(Sampling, SameSeedSameTokensAndBadOptionsAreErrors) {
    std::vector<float> logits(50);
    for (int i = 0; i < 50; ++i) logits[size_t(i)] = float(std::sin(i));
    std::vector<std::pair<float, int32_t>> work;
    lm::SamplingOptions o;
    Rng a(11), b(11);
    for (int i = 0; i < 100; ++i)
        EXPECT_EQ(lm::sample_token(logits.data(), 50, o, a, work),
                  lm::sample_token(logits.data(), 50, o, b, work));
    o.top_p = 0;
    EXPECT_TRUE(test::throws_error_with(
        [&] { lm::sample_token(logits.data(), 50, o, a, work); }, {"top_p"}));
}

}  // namespace
}  // namespace moe
