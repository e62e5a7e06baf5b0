// build_plan_from_choices and build_token_index: hand cases with exact expected plans
// (dropless, capacity by probability and by position, ties, router-dropped choices, an
// empty expert, every token on one expert), the errors, and a sweep over awkward shapes
// checking every invariant of a plan, including that the kept rows are the
// highest-priority ones.
#include <algorithm>
#include <numeric>

#include "core/check.h"
#include "core/rng.h"
#include "moe/routing_plan.h"
#include "test_support.h"

namespace moe::sparse {
namespace {

// A plan with its own storage.
struct PlanStore {
    std::vector<int64_t> offsets, token_offsets, scratch;
    std::vector<int32_t> row_token, row_choice, token_rows;
    std::vector<double> row_weight;
    RoutingPlan<double> plan;

    PlanStore(int64_t T, int64_t E, int64_t k, int64_t max_rows = -1) {
        if (max_rows < 0) max_rows = T * k;
        offsets.assign(size_t(E + 1), -7);
        token_offsets.assign(size_t(T + 1), -7);
        scratch.assign(size_t(E + T * k), -7);
        row_token.assign(size_t(max_rows), -7);
        row_choice.assign(size_t(max_rows), -7);
        token_rows.assign(size_t(max_rows), -7);
        row_weight.assign(size_t(max_rows), -7);
        plan.max_rows = max_rows;
        plan.offsets = offsets.data();
        plan.row_token = row_token.data();
        plan.row_choice = row_choice.data();
        plan.row_weight = row_weight.data();
        plan.token_offsets = token_offsets.data();
        plan.token_rows = token_rows.data();
    }
    void build(const std::vector<int32_t>& expert, const std::vector<double>& weight,
               const std::vector<double>* priority, int64_t T, int64_t k, int64_t E,
               int64_t capacity) {
        Choices<double> ch;
        ch.T = T;
        ch.k = k;
        ch.expert = expert.data();
        ch.weight = weight.data();
        ch.priority = priority ? priority->data() : nullptr;
        build_plan_from_choices(plan, ch, E, capacity, scratch.data());
    }
    std::vector<int64_t> offs() const { return {offsets.begin(), offsets.begin() + plan.E + 1}; }
    std::vector<int32_t> tokens() const {
        return {row_token.begin(), row_token.begin() + plan.rows()};
    }
    std::vector<int32_t> choices() const {
        return {row_choice.begin(), row_choice.begin() + plan.rows()};
    }
};

std::vector<double> iota_weights(size_t n) {
    std::vector<double> w(n);
    for (size_t i = 0; i < n; ++i) w[i] = 0.01 * double(i + 1);
    return w;
}

TEST(MoePlan, DroplessHandCase) {
    // T=4, k=2, E=3. Choices (token: experts): 0: 2,0  1: 0,1  2: 2,1  3: 0,2
    const std::vector<int32_t> ex = {2, 0, 0, 1, 2, 1, 0, 2};
    const auto w = iota_weights(8);
    PlanStore s(4, 3, 2);
    s.build(ex, w, nullptr, 4, 2, 3, -1);
    EXPECT_EQ(s.offs(), (std::vector<int64_t>{0, 3, 5, 8}));
    // Expert 0: choices 1 (t0), 2 (t1), 6 (t3); expert 1: 3 (t1), 5 (t2); expert 2: 0, 4, 7.
    EXPECT_EQ(s.choices(), (std::vector<int32_t>{1, 2, 6, 3, 5, 0, 4, 7}));
    EXPECT_EQ(s.tokens(), (std::vector<int32_t>{0, 1, 3, 1, 2, 0, 2, 3}));
    for (int64_t r = 0; r < 8; ++r)
        EXPECT_EQ(s.row_weight[size_t(r)], w[size_t(s.row_choice[size_t(r)])]);
    EXPECT_EQ(s.plan.dropped, 0);
    EXPECT_EQ(s.plan.T, 4);
    EXPECT_EQ(s.plan.E, 3);
    // Token index: token 0 has rows 0 and 5, token 1 rows 1 and 3, token 2 rows 4 and 6,
    // token 3 rows 2 and 7 (ascending within each token).
    EXPECT_EQ(std::vector<int64_t>(s.token_offsets.begin(), s.token_offsets.end()),
              (std::vector<int64_t>{0, 2, 4, 6, 8}));
    EXPECT_EQ(s.token_rows, (std::vector<int32_t>{0, 5, 1, 3, 4, 6, 2, 7}));
}

TEST(MoePlan, CapacityByProbabilityKeepsTheHighestInTokenOrder) {
    // k=1, E=2, every token on expert 0 except token 2; capacity 2.
    const std::vector<int32_t> ex = {0, 0, 1, 0, 0};
    const std::vector<double> prio = {0.2, 0.9, 0.4, 0.1, 0.5};
    const auto w = iota_weights(5);
    PlanStore s(5, 2, 1);
    s.build(ex, w, &prio, 5, 1, 2, 2);
    // Expert 0 keeps tokens 1 (0.9) and 4 (0.5), in token order; expert 1 keeps token 2.
    EXPECT_EQ(s.offs(), (std::vector<int64_t>{0, 2, 3}));
    EXPECT_EQ(s.tokens(), (std::vector<int32_t>{1, 4, 2}));
    EXPECT_EQ(s.plan.dropped, 2);
    // Dropped tokens 0 and 3 have no rows.
    EXPECT_EQ(s.token_offsets[1] - s.token_offsets[0], 0);
    EXPECT_EQ(s.token_offsets[4] - s.token_offsets[3], 0);
}

TEST(MoePlan, CapacityByPositionKeepsTheFirstTokens) {
    const std::vector<int32_t> ex = {0, 0, 1, 0, 0};
    const auto w = iota_weights(5);
    PlanStore s(5, 2, 1);
    s.build(ex, w, nullptr, 5, 1, 2, 2);
    EXPECT_EQ(s.offs(), (std::vector<int64_t>{0, 2, 3}));
    EXPECT_EQ(s.tokens(), (std::vector<int32_t>{0, 1, 2}));
    EXPECT_EQ(s.plan.dropped, 2);
}

TEST(MoePlan, PriorityTiesGoToTheLowerToken) {
    const std::vector<int32_t> ex = {0, 0, 0, 0};
    const std::vector<double> prio = {0.3, 0.5, 0.5, 0.5};
    const auto w = iota_weights(4);
    PlanStore s(4, 1, 1);
    s.build(ex, w, &prio, 4, 1, 1, 2);
    EXPECT_EQ(s.tokens(), (std::vector<int32_t>{1, 2}));
}

TEST(MoePlan, CapacityZeroDropsEverything) {
    const std::vector<int32_t> ex = {0, 1, 1, 0};
    const auto w = iota_weights(4);
    PlanStore s(2, 2, 2);
    s.build(ex, w, nullptr, 2, 2, 2, 0);
    EXPECT_EQ(s.plan.rows(), 0);
    EXPECT_EQ(s.plan.dropped, 4);
    EXPECT_EQ(std::vector<int64_t>(s.token_offsets.begin(), s.token_offsets.end()),
              (std::vector<int64_t>{0, 0, 0}));
}

TEST(MoePlan, RouterDroppedChoicesCountAsDropped) {
    const std::vector<int32_t> ex = {1, -1, -1, 0};
    const auto w = iota_weights(4);
    PlanStore s(2, 2, 2);
    s.build(ex, w, nullptr, 2, 2, 2, -1);
    EXPECT_EQ(s.offs(), (std::vector<int64_t>{0, 1, 2}));
    EXPECT_EQ(s.choices(), (std::vector<int32_t>{3, 0}));
    EXPECT_EQ(s.plan.dropped, 2);
}

TEST(MoePlan, EmptyExpertAndAllTokensOnOneExpert) {
    const int64_t T = 7, E = 4;
    const std::vector<int32_t> ex(T, 2);
    const auto w = iota_weights(T);
    PlanStore s(T, E, 1);
    s.build(ex, w, nullptr, T, 1, E, -1);
    EXPECT_EQ(s.offs(), (std::vector<int64_t>{0, 0, 0, 7, 7}));
    EXPECT_EQ(s.plan.count(0), 0);
    EXPECT_EQ(s.plan.count(2), 7);
    EXPECT_EQ(s.tokens(), (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6}));
}

TEST(MoePlan, Errors) {
    const std::vector<int32_t> ex = {0, 3};
    const auto w = iota_weights(2);
    PlanStore s(2, 3, 1);
    EXPECT_THROW(s.build(ex, w, nullptr, 2, 1, 3, -1), Error);  // expert 3 of 3
    PlanStore small(2, 3, 1, 1);                                // room for 1 row, 2 choices
    const std::vector<int32_t> ok = {0, 1};
    EXPECT_THROW(small.build(ok, w, nullptr, 2, 1, 3, -1), Error);
    RoutingPlan<double> unbound;
    Choices<double> ch;
    int64_t scratch[4];
    EXPECT_THROW(build_plan_from_choices(unbound, ch, 1, -1, scratch), Error);
}

TEST(MoePlan, TokenIndexFromRowsFilledDirectly) {
    // An expert-choice router fills rows itself: expert 0 takes tokens 2, 0; expert 1
    // takes token 2.
    PlanStore s(3, 2, 2);
    s.plan.T = 3;
    s.plan.E = 2;
    s.offsets = {0, 2, 3};
    s.row_token[0] = 2;
    s.row_token[1] = 0;
    s.row_token[2] = 2;
    build_token_index(s.plan, s.scratch.data());
    EXPECT_EQ(std::vector<int64_t>(s.token_offsets.begin(), s.token_offsets.end()),
              (std::vector<int64_t>{0, 1, 1, 3}));
    EXPECT_EQ(std::vector<int32_t>(s.token_rows.begin(), s.token_rows.begin() + 3),
              (std::vector<int32_t>{1, 0, 2}));
    s.row_token[1] = 3;  // out of range
    EXPECT_THROW(build_token_index(s.plan, s.scratch.data()), Error);
}

// Random distinct experts per token (a random permutation's first k), random weights and
// priorities with deliberate ties.
struct RandomChoices {
    std::vector<int32_t> expert;
    std::vector<double> weight, priority;
    RandomChoices(int64_t T, int64_t E, int64_t k, uint64_t seed, bool skewed) {
        Rng rng(seed);
        std::vector<int32_t> perm(static_cast<size_t>(E));
        for (int64_t t = 0; t < T; ++t) {
            std::iota(perm.begin(), perm.end(), 0);
            for (int64_t i = E - 1; i > 0; --i)
                std::swap(perm[size_t(i)], perm[rng.below(uint64_t(i + 1))]);
            if (skewed) std::sort(perm.begin(), perm.begin() + std::min<int64_t>(E, k + 1));
            for (int64_t j = 0; j < k; ++j) {
                expert.push_back(perm[size_t(j)]);
                weight.push_back(rng.uniform());
                priority.push_back(double(rng.below(5)) / 4.0);  // ties on purpose
            }
        }
    }
};

void check_invariants(const PlanStore& s, const RandomChoices& rc, int64_t T, int64_t E, int64_t k,
                      int64_t capacity, bool by_priority) {
    const RoutingPlan<double>& p = s.plan;
    SCOPED_TRACE(testing::Message() << "T=" << T << " E=" << E << " k=" << k
                                    << " capacity=" << capacity << " priority=" << by_priority);
    ASSERT_EQ(p.offsets[0], 0);
    std::vector<int64_t> wanted(size_t(E), 0);
    for (int32_t e : rc.expert) ++wanted[size_t(e)];
    int64_t expect_dropped = 0;
    for (int64_t e = 0; e < E; ++e) {
        ASSERT_LE(p.offsets[e], p.offsets[e + 1]);
        const int64_t keep =
            capacity < 0 ? wanted[size_t(e)] : std::min(wanted[size_t(e)], capacity);
        EXPECT_EQ(p.count(e), keep) << "expert " << e;
        expect_dropped += wanted[size_t(e)] - keep;
        for (int64_t r = p.offsets[e]; r < p.offsets[e + 1]; ++r) {
            const int32_t c = p.row_choice[r];
            EXPECT_EQ(rc.expert[size_t(c)], e);
            EXPECT_EQ(p.row_token[r], c / k);
            EXPECT_EQ(p.row_weight[r], rc.weight[size_t(c)]);
            if (r > p.offsets[e]) {
                EXPECT_LT(p.row_token[r - 1], p.row_token[r]) << "not sorted";
            }
        }
        // The kept rows outrank every dropped choice of this expert.
        if (by_priority && capacity >= 0 && wanted[size_t(e)] > capacity) {
            std::vector<char> kept(size_t(T * k), 0);
            for (int64_t r = p.offsets[e]; r < p.offsets[e + 1]; ++r)
                kept[size_t(p.row_choice[r])] = 1;
            for (int64_t r = p.offsets[e]; r < p.offsets[e + 1]; ++r) {
                const int64_t a = p.row_choice[r];
                for (int64_t b = 0; b < T * k; ++b) {
                    if (rc.expert[size_t(b)] != e || kept[size_t(b)]) continue;
                    const double pa = rc.priority[size_t(a)], pb = rc.priority[size_t(b)];
                    EXPECT_TRUE(pa > pb || (pa == pb && a < b))
                        << "kept " << a << " below dropped " << b;
                }
            }
        }
    }
    EXPECT_EQ(p.rows() + p.dropped, T * k);
    EXPECT_EQ(p.dropped, expect_dropped);
    // The token index lists every row once, each token's rows ascending.
    std::vector<int> seen(size_t(p.rows()), 0);
    ASSERT_EQ(p.token_offsets[0], 0);
    ASSERT_EQ(p.token_offsets[T], p.rows());
    for (int64_t t = 0; t < T; ++t)
        for (int64_t i = p.token_offsets[t]; i < p.token_offsets[t + 1]; ++i) {
            const int32_t r = p.token_rows[i];
            ++seen[size_t(r)];
            EXPECT_EQ(p.row_token[r], t);
            if (i > p.token_offsets[t]) {
                EXPECT_LT(p.token_rows[i - 1], r);
            }
        }
    for (int v : seen) EXPECT_EQ(v, 1);
}

TEST(MoePlan, InvariantsOverAwkwardShapes) {
    uint64_t seed = 1;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(2, E), E})
                for (int64_t capacity : {int64_t(-1), int64_t(0), int64_t(1), int64_t(3), T})
                    for (bool by_priority : {false, true})
                        for (bool skewed : {false, true}) {
                            const RandomChoices rc(T, E, k, seed++, skewed);
                            PlanStore s(T, E, k);
                            s.build(rc.expert, rc.weight, by_priority ? &rc.priority : nullptr, T,
                                    k, E, capacity);
                            check_invariants(s, rc, T, E, k, capacity, by_priority);
                        }
}

TEST(MoePlan, FloatPlanMatchesDouble) {
    const int64_t T = 64, E = 8, k = 2;
    const RandomChoices rc(T, E, k, 99, true);
    PlanStore s(T, E, k);
    s.build(rc.expert, rc.weight, &rc.priority, T, k, E, 10);
    std::vector<float> wf(rc.weight.begin(), rc.weight.end()),
        pf(rc.priority.begin(), rc.priority.end());
    std::vector<int64_t> offsets(E + 1), token_offsets(T + 1), scratch(E + T * k);
    std::vector<int32_t> row_token(T * k), row_choice(T * k), token_rows(T * k);
    std::vector<float> row_weight(T * k);
    RoutingPlan<float> pl;
    pl.max_rows = T * k;
    pl.offsets = offsets.data();
    pl.row_token = row_token.data();
    pl.row_choice = row_choice.data();
    pl.row_weight = row_weight.data();
    pl.token_offsets = token_offsets.data();
    pl.token_rows = token_rows.data();
    Choices<float> ch{T, k, rc.expert.data(), wf.data(), pf.data()};
    build_plan_from_choices(pl, ch, E, 10, scratch.data());
    EXPECT_EQ(offsets, s.offs());
    EXPECT_EQ(std::vector<int32_t>(row_choice.begin(), row_choice.begin() + pl.rows()),
              s.choices());
    EXPECT_EQ(pl.dropped, s.plan.dropped);
}

}  // namespace
}  // namespace moe::sparse
