// Canonical reductions over rows (kernels/grouped_reduce.h): with g groups, a sum over N
// rows equals, bit for bit, the top of the tree over the sums that R "ranks" (R dividing g)
// compute on their N / R rows with g / R groups each. That is what makes R ranks and one
// process train identically; here it is checked for every reduction a replicated weight
// gradient goes through (linear weight and bias, RMSNorm gain, LayerNorm gain and bias,
// embedding).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "kernels/gemm.h"
#include "kernels/grouped_reduce.h"
#include "kernels/norms.h"
#include "nn/embedding.h"
#include "nn/linear.h"
#include "test_support.h"

namespace moe {
namespace {

std::vector<float> random_values(int64_t n, uint64_t seed) {
    Rng rng{seed};
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = rng.normal();
    return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs reduce(out, first_row, rows) (which ADDS rows [first_row, first_row + rows) into out)
// once on all N rows with g groups, and as R ranks with g / R groups each whose results are
// combined by kernels::pairwise_tree_sum. Returns {whole, ranks}.
template <class Reduce>
std::pair<std::vector<float>, std::vector<float>> whole_and_ranks(int64_t n_out, int64_t N,
                                                                  int64_t g, int64_t R,
                                                                  const Reduce& reduce) {
    std::vector<float> whole(static_cast<size_t>(n_out), 0.0f);
    {
        const kernels::ReductionGroups groups(g);
        reduce(whole.data(), 0, N);
    }
    std::vector<float> parts(static_cast<size_t>(R * n_out), 0.0f);
    {
        const kernels::ReductionGroups groups(g / R);
        for (int64_t r = 0; r < R; ++r) reduce(parts.data() + r * n_out, r * (N / R), N / R);
    }
    kernels::pairwise_tree_sum(parts.data(), R, n_out);
    parts.resize(static_cast<size_t>(n_out));
    return {whole, parts};
}

TEST(GroupedReduce, OneGroupIsThePlainGemm) {
    const int64_t N = 96, C = 24, OC = 40;
    const auto d_out = random_values(N * OC, 1), in = random_values(N * C, 2),
               w = random_values(OC * C, 3);
    std::vector<float> plain(static_cast<size_t>(OC * C), 0.0f), grouped = plain;
    kernels::gemm(true, false, OC, C, N, 1.0f, d_out.data(), OC, in.data(), C, 1.0f, plain.data(),
                  C);
    nn::linear_backward<float>(nullptr, grouped.data(), nullptr, d_out.data(), in.data(), w.data(),
                               N, C, OC);
    EXPECT_TRUE(same_bits(plain, grouped));
}

TEST(GroupedReduce, LinearWeightAndBiasOfRanksEqualOneProcessBitForBit) {
    const int64_t C = 48, OC = 72;
    for (int64_t g : {2, 4, 8})
        for (int64_t R : {int64_t(1), int64_t(2), g}) {
            if (g % R) continue;
            const int64_t N = 64 * g;
            const auto d_out = random_values(N * OC, 10 + g), in = random_values(N * C, 20 + g),
                       w = random_values(OC * C, 30);
            auto weight = [&](float* dw, int64_t first, int64_t rows) {
                nn::linear_backward<float>(nullptr, dw, nullptr, d_out.data() + first * OC,
                                           in.data() + first * C, w.data(), rows, C, OC);
            };
            auto bias = [&](float* db, int64_t first, int64_t rows) {
                std::vector<float> dw(static_cast<size_t>(OC * C), 0.0f);
                nn::linear_backward<float>(nullptr, dw.data(), db, d_out.data() + first * OC,
                                           in.data() + first * C, w.data(), rows, C, OC);
            };
            const auto [w1, wr] = whole_and_ranks(OC * C, N, g, R, weight);
            EXPECT_TRUE(same_bits(w1, wr)) << "weight, g=" << g << " R=" << R;
            const auto [b1, br] = whole_and_ranks(OC, N, g, R, bias);
            EXPECT_TRUE(same_bits(b1, br)) << "bias, g=" << g << " R=" << R;
        }
}

TEST(GroupedReduce, RmsnormGainAndEmbeddingOfRanksEqualOneProcessBitForBit) {
    const int64_t g = 4, R = 2, N = 4 * 37, C = 40, V = 50;
    const auto d_out = random_values(N * C, 5), in = random_values(N * C, 6),
               gain = random_values(C, 7);
    std::vector<float> rstd(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) rstd[static_cast<size_t>(n)] = 0.5f + 0.01f * float(n % 13);
    std::vector<float> d_in(static_cast<size_t>(N * C));
    auto norm = [&](float* dg, int64_t first, int64_t rows) {
        kernels::rmsnorm_backward(d_in.data() + first * C, dg, d_out.data() + first * C,
                                  in.data() + first * C, gain.data(), rstd.data() + first, rows, C);
    };
    const auto [g1, gr] = whole_and_ranks(C, N, g, R, norm);
    EXPECT_TRUE(same_bits(g1, gr));

    std::vector<int32_t> ids(static_cast<size_t>(N));
    Rng rng{9};
    for (int32_t& id : ids) id = int32_t(rng.below(uint64_t(V)));
    auto emb = [&](float* dt, int64_t first, int64_t rows) {
        nn::embedding_backward(dt, d_out.data() + first * C, ids.data() + first, rows, V, C);
    };
    const auto [e1, er] = whole_and_ranks(V * C, N, g, R, emb);
    EXPECT_TRUE(same_bits(e1, er));
}

// LayerNorm's gain and bias (one pass computes both) follow the same canonical order: before
// layernorm_backward took the reduction groups into account this failed.
TEST(GroupedReduce, LayernormGainAndBiasOfRanksEqualOneProcessBitForBit) {
    const int64_t C = 40;
    for (int64_t g : {2, 4})
        for (int64_t R : {int64_t(2), g}) {
            if (g % R) continue;
            const int64_t N = g * 37;
            const auto d_out = random_values(N * C, 50 + g), in = random_values(N * C, 60 + g),
                       gain = random_values(C, 70);
            std::vector<float> mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
            for (int64_t n = 0; n < N; ++n) {
                mean[static_cast<size_t>(n)] = 0.1f * float(n % 7) - 0.3f;
                rstd[static_cast<size_t>(n)] = 0.5f + 0.01f * float(n % 13);
            }
            std::vector<float> d_in(static_cast<size_t>(N * C));
            // out: [2, C], the gain's gradient then the bias's.
            auto norm = [&](float* out, int64_t first, int64_t rows) {
                kernels::layernorm_backward(d_in.data() + first * C, out, out + C,
                                            d_out.data() + first * C, in.data() + first * C,
                                            gain.data(), mean.data() + first, rstd.data() + first,
                                            rows, C);
            };
            const auto [w1, wr] = whole_and_ranks(2 * C, N, g, R, norm);
            EXPECT_TRUE(same_bits(w1, wr)) << "gain and bias, g=" << g << " R=" << R;
            // Without a bias the gain's gradient is the same sum.
            auto gain_only = [&](float* out, int64_t first, int64_t rows) {
                kernels::layernorm_backward(d_in.data() + first * C, out, nullptr,
                                            d_out.data() + first * C, in.data() + first * C,
                                            gain.data(), mean.data() + first, rstd.data() + first,
                                            rows, C);
            };
            const auto [v1, vr] = whole_and_ranks(C, N, g, R, gain_only);
            EXPECT_TRUE(same_bits(v1, vr)) << "gain without bias, g=" << g << " R=" << R;
            EXPECT_TRUE(std::memcmp(v1.data(), w1.data(), size_t(C) * sizeof(float)) == 0)
                << "gain with and without bias, g=" << g << " R=" << R;
        }
}

// Without groups the split changes the bits (which is why the groups exist): a check that
// the test above could fail.
TEST(GroupedReduce, PlainSumsOfRanksDifferFromOneProcess) {
    const int64_t N = 2048, C = 64, OC = 64;
    const auto d_out = random_values(N * OC, 41), in = random_values(N * C, 42),
               w = random_values(OC * C, 43);
    auto weight = [&](float* dw, int64_t first, int64_t rows) {
        nn::linear_backward<float>(nullptr, dw, nullptr, d_out.data() + first * OC,
                                   in.data() + first * C, w.data(), rows, C, OC);
    };
    std::vector<float> whole(static_cast<size_t>(OC * C), 0.0f);
    weight(whole.data(), 0, N);
    std::vector<float> parts(static_cast<size_t>(2 * OC * C), 0.0f);
    weight(parts.data(), 0, N / 2);
    weight(parts.data() + OC * C, N / 2, N / 2);
    kernels::pairwise_tree_sum(parts.data(), 2, OC * C);
    parts.resize(static_cast<size_t>(OC * C));
    EXPECT_FALSE(same_bits(whole, parts));
}

TEST(GroupedReduce, BadGroupCountsAreErrors) {
    EXPECT_TRUE(test::throws_error_with([] { kernels::ReductionGroups g(3); }, {"power of two"}));
    const kernels::ReductionGroups g(4);
    std::vector<float> dst(2, 0.0f);
    EXPECT_TRUE(test::throws_error_with(
        [&] { kernels::grouped_rows_reduce(dst.data(), 2, 7, [](float*, int64_t, int64_t) {}); },
        {"7 rows do not split into 4"}));
}

}  // namespace
}  // namespace moe
