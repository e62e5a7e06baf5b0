// hash router: the documented hash (a known splitmix64 value, a re-implementation of the
// rule), determinism (position, instance, precision), spread over experts, k distinct
// experts with weights 1/k, the error without token ids, no gradient and no parameters,
// capacity by position, and the whole layer against the dense reference.
#include <cmath>
#include <functional>
#include <numeric>

#include "router_harness.h"

namespace moe {
namespace {

sparse::MoeConfig hash_cfg(int64_t E, int64_t k, int64_t d = 4) {
    sparse::MoeConfig c;
    c.router = "hash";
    c.n_experts = E;
    c.top_k = k;
    c.d_model = d;
    c.d_expert = 3;
    return c;
}

uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// The rule of hash.cpp written again: successive hashes drive a partial Fisher-Yates shuffle.
std::vector<int32_t> experts_of(int32_t id, int64_t E, int64_t k) {
    std::vector<int32_t> perm(static_cast<size_t>(E));
    std::iota(perm.begin(), perm.end(), 0);
    uint64_t h = uint32_t(id);
    for (int64_t j = 0; j < k; ++j) {
        h = splitmix64(h);
        std::swap(perm[size_t(j)], perm[size_t(j + int64_t(h % uint64_t(E - j)))]);
    }
    perm.resize(size_t(k));
    std::sort(perm.begin(), perm.end());
    return perm;
}

template <class R>
std::vector<int32_t> experts_of_token(const test::RouterHarness<R>& h, int64_t t) {
    std::vector<int32_t> v;
    for (int64_t i = h.plan.token_offsets[t]; i < h.plan.token_offsets[t + 1]; ++i)
        v.push_back(h.expert_of_row(h.plan.token_rows[i]));
    std::sort(v.begin(), v.end());
    return v;
}

TEST(Hash, KnownValueAndTheDocumentedRule) {
    // splitmix64's first output from state 0 is 0xe220a8397b1dcdaf: id 0 goes to expert
    // 0xe220a8397b1dcdaf mod E.
    EXPECT_EQ(splitmix64(0), 0xe220a8397b1dcdafull);
    const int32_t id0 = 0;
    const double x[4] = {};
    for (int64_t E : {2, 8, 64}) {
        test::RouterHarness<double> h(hash_cfg(E, 1), 1);
        h.forward(x, 1, false, 0, &id0);
        EXPECT_EQ(experts_of_token(h, 0),
                  std::vector<int32_t>{int32_t(0xe220a8397b1dcdafull % uint64_t(E))});
    }
    std::vector<int32_t> ids(64);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i * 7919 + 3);
    const auto xs = test::random_normal(64 * 4, 1);
    for (int64_t E : {1, 2, 8, 64})
        for (int64_t k : {int64_t(1), std::min<int64_t>(3, E), E}) {
            test::RouterHarness<double> h(hash_cfg(E, k), 64);
            h.forward(xs.data(), 64, false, 0, ids.data());
            for (int64_t t = 0; t < 64; ++t)
                ASSERT_EQ(experts_of_token(h, t), experts_of(ids[size_t(t)], E, k))
                    << "E=" << E << " k=" << k << " t=" << t;
        }
}

TEST(Hash, PlanInvariantsAndWeightsOverSizes) {
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(2, E), E}) {
                SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E << " k=" << k);
                test::RouterHarness<float> h(hash_cfg(E, k), 64);
                std::vector<int32_t> ids(static_cast<size_t>(T));
                for (int64_t t = 0; t < T; ++t) ids[size_t(t)] = int32_t(1000 + 37 * t);
                const auto x = test::random_normal_f32(size_t(T * 4), 2);
                h.forward(x.data(), T, true, 5, ids.data());
                ASSERT_TRUE(test::plan_invariants(h.plan, T * k, -1));
                for (int64_t t = 0; t < T; ++t) {
                    const auto ex = experts_of_token(h, t);
                    ASSERT_EQ(int64_t(ex.size()), k);
                    EXPECT_EQ(std::adjacent_find(ex.begin(), ex.end()), ex.end());  // distinct
                }
                for (int64_t r = 0; r < h.plan.rows(); ++r)
                    EXPECT_EQ(h.plan.row_weight[r], 1.0f / float(k));
                EXPECT_EQ(h.losses.weighted_total, 0.0);
                EXPECT_EQ(h.router->probs(), nullptr);
            }
}

TEST(Hash, DeterministicAcrossPositionsInstancesAndPrecisions) {
    const int64_t T = 7, E = 8, k = 2;
    const std::vector<int32_t> ids = {5, 9, 5, 123456, 9, 5, -1};
    const auto x = test::random_normal(size_t(T * 4), 3);
    const auto xf = test::to_f32(x);
    test::RouterHarness<double> a(hash_cfg(E, k), T), b(hash_cfg(E, k), T);
    test::RouterHarness<float> f(hash_cfg(E, k), T);
    a.forward(x.data(), T, true, 1, ids.data());
    b.forward(x.data(), T, false, 2, ids.data());
    f.forward(xf.data(), T, true, 3, ids.data());
    EXPECT_EQ(a.assignment(), b.assignment());
    EXPECT_EQ(a.assignment(), f.assignment());
    EXPECT_EQ(experts_of_token(a, 0), experts_of_token(a, 2));  // id 5 at positions 0, 2, 5
    EXPECT_EQ(experts_of_token(a, 0), experts_of_token(a, 5));
    EXPECT_EQ(experts_of_token(a, 1), experts_of_token(a, 4));
    // Changing x changes nothing: the route depends on the id alone.
    const auto x2 = test::random_normal(size_t(T * 4), 4);
    b.forward(x2.data(), T, false, 0, ids.data());
    EXPECT_EQ(a.assignment(), b.assignment());
}

TEST(Hash, SpreadsConsecutiveIdsEvenly) {
    const int64_t T = 4096;
    std::vector<int32_t> ids(static_cast<size_t>(T));
    std::iota(ids.begin(), ids.end(), 0);
    const std::vector<float> x(size_t(T * 4), 0.0f);
    for (auto [E, k] : {std::pair<int64_t, int64_t>{8, 1}, {64, 1}, {8, 2}, {64, 8}}) {
        test::RouterHarness<float> h(hash_cfg(E, k), T);
        h.forward(x.data(), T, false, 0, ids.data());
        // Counts are ~binomial(T*k, 1/E): mean m, sd ~ sqrt(m). 5 sd either side.
        const double m = double(T * k) / double(E), band = 5 * std::sqrt(m);
        for (int64_t e = 0; e < E; ++e)
            EXPECT_NEAR(double(h.plan.count(e)), m, band) << "E=" << E << " k=" << k << " e=" << e;
    }
}

TEST(Hash, NeedsTokenIdsAndHasNoGradient) {
    test::RouterHarness<double> h(hash_cfg(8, 2), 4);
    const auto x = test::random_normal(16, 5);
    try {
        h.forward(x.data(), 4);
        FAIL() << "no error without token ids";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("hash"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("token_ids"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(h.params.entries().empty());
    const std::vector<int32_t> ids = {1, 2, 3, 4};
    h.forward(x.data(), 4, true, 0, ids.data());
    std::vector<double> d_row(size_t(h.plan.rows()), 1.0), d_x(x.size(), 0.5);
    h.router->backward(h.in, h.plan, d_row.data(), d_x.data());
    EXPECT_EQ(d_x, std::vector<double>(x.size(), 0.5));
}

TEST(Hash, CapacityKeepsTheEarliestTokens) {
    auto c = hash_cfg(4, 1);
    c.capacity_factor = 1.0;  // 2 seats each for 8 tokens
    test::RouterHarness<double> h(c, 8);
    const std::vector<int32_t> ids(8, 42);  // everyone on one expert
    const auto x = test::random_normal(32, 6);
    h.forward(x.data(), 8, false, 0, ids.data());
    EXPECT_TRUE(test::plan_invariants(h.plan, 8, 2));
    EXPECT_EQ(h.plan.rows(), 2);
    EXPECT_EQ(h.plan.dropped, 6);
    EXPECT_EQ(h.plan.row_token[0], 0);
    EXPECT_EQ(h.plan.row_token[1], 1);
}

TEST(HashLayer, MatchesReferenceOverSizes) {
    const auto none = [](Arena&, const std::string&) {};
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(2, E)}) {
                SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E << " k=" << k);
                std::vector<int32_t> ids(static_cast<size_t>(T));
                for (int64_t t = 0; t < T; ++t) ids[size_t(t)] = int32_t(t * 31 + 7);
                test::check_layer_against_reference(hash_cfg(E, k), T, true, 0, ids.data(), none,
                                                    T <= 7 && E == 8);
            }
    // One repeated id: all tokens on the same expert(s), the others empty.
    const std::vector<int32_t> same(7, 3);
    test::check_layer_against_reference(hash_cfg(8, 1), 7, true, 0, same.data(), none, true);
}

}  // namespace
}  // namespace moe
