// noisy_topk router: plan invariants over the size sweep, the gates as the paper defines them
// (noise from Rng(seed) in training, none in evaluation), every gradient (gates, noise term,
// importance and load losses, jitter) by finite differences, and forward + backward against
// PyTorch with the same fixed noise.
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <tuple>

#include "router_harness.h"

namespace moe::sparse {
// Test hook in src/moe/routers/noisy_topk.cpp: fixed standard normal draws [T, E].
template <class R>
void set_noisy_topk_noise(Router<R>& router, const R* noise);
}  // namespace moe::sparse

namespace moe {
namespace {

constexpr double kEpsF = std::numeric_limits<float>::epsilon();

sparse::MoeConfig noisy_cfg(int64_t E, int64_t k, int64_t d) {
    sparse::MoeConfig c;
    c.router = "noisy_topk";
    c.n_experts = E;
    c.top_k = k;
    c.d_model = d;
    c.aux_loss_coef = 0.3;
    c.z_loss_coef = 0.05;
    c.importance_coef = 0.7;
    c.noisy_topk.load_coef = 0.9;
    return c;
}

template <class R>
void randomize(test::RouterHarness<R>& h, uint64_t seed) {
    h.randomize("router.w", seed, 1.0);
    h.randomize("router.w_noise", seed + 1, 0.5);
    h.randomize("router.b", seed + 2, 0.3);
}

// The paper's gates computed here in double: H = clean + eps * softplus(raw), top k, softmax.
std::vector<double> expected_gates(const test::RouterHarness<double>& h, const double* x, int64_t T,
                                   const std::vector<double>& eps) {
    const int64_t E = h.cfg.n_experts, d = h.cfg.d_model, k = h.cfg.top_k;
    std::vector<double> g(size_t(T * E), 0.0);
    for (int64_t t = 0; t < T; ++t) {
        std::vector<double> H(static_cast<size_t>(E));
        for (int64_t e = 0; e < E; ++e) {
            double c = h.param("router.b")[e], r = 0;
            for (int64_t i = 0; i < d; ++i) {
                c += x[t * d + i] * h.param("router.w")[e * d + i];
                r += x[t * d + i] * h.param("router.w_noise")[e * d + i];
            }
            H[size_t(e)] = c + eps[size_t(t * E + e)] * std::log1p(std::exp(r));
        }
        std::vector<int> idx(static_cast<size_t>(E));
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return H[a] > H[b]; });
        double s = 0;
        for (int64_t j = 0; j < k; ++j) s += std::exp(H[idx[j]] - H[idx[0]]);
        for (int64_t j = 0; j < k; ++j)
            g[size_t(t * E + idx[j])] = std::exp(H[idx[j]] - H[idx[0]]) / s;
    }
    return g;
}

TEST(NoisyTopk, PlanInvariantsOverSizes) {
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(2, E), E}) {
                SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E << " k=" << k);
                test::RouterHarness<float> h(noisy_cfg(E, k, 5), 64);
                randomize(h, 7);
                auto x = test::random_normal_f32(size_t(T * 5), 3);
                h.forward(x.data(), T, /*training=*/true, /*seed=*/11);
                ASSERT_TRUE(test::plan_invariants(h.plan, T * k, -1));
                EXPECT_EQ(h.plan.dropped, 0);
                for (int64_t t = 0; t < T; ++t) {
                    // k distinct experts, gates summing to 1.
                    ASSERT_EQ(h.plan.token_offsets[t + 1] - h.plan.token_offsets[t], k);
                    std::vector<int> seen(size_t(E), 0);
                    double s = 0;
                    for (int64_t i = h.plan.token_offsets[t]; i < h.plan.token_offsets[t + 1];
                         ++i) {
                        const int32_t r = h.plan.token_rows[i];
                        ++seen[size_t(h.expert_of_row(r))];
                        s += h.plan.row_weight[r];
                    }
                    EXPECT_EQ(*std::max_element(seen.begin(), seen.end()), 1);
                    EXPECT_NEAR(s, 1.0, 8 * kEpsF);
                }
                EXPECT_TRUE(std::isfinite(h.losses.load_loss) && h.losses.load_loss >= 0);
                EXPECT_TRUE(std::isfinite(h.losses.importance_loss));
                if (k == E) {
                    EXPECT_EQ(h.losses.load_loss, 0.0);  // P = 1 for every expert
                }
            }
}

TEST(NoisyTopk, GatesUseRngNoiseInTrainingAndNoneInEvaluation) {
    const int64_t T = 7, E = 8, d = 5;
    test::RouterHarness<double> h(noisy_cfg(E, 2, d), T);
    randomize(h, 5);
    auto x = test::random_normal(size_t(T * d), 4);
    // Evaluation: the top k of the clean logits.
    h.forward(x.data(), T, false, 123);
    EXPECT_TRUE(test::all_close(h.dense_weights(),
                                expected_gates(h, x.data(), T, std::vector<double>(T * E, 0.0)),
                                1e-14, 1e-13));
    // Training: eps[t, e] is the e-th normal of token t's stream, Rng(seed).fork(t).
    std::vector<double> eps(size_t(T * E));
    for (int64_t t = 0; t < T; ++t) {
        Rng rng = Rng(123).fork(uint64_t(t));
        for (int64_t e = 0; e < E; ++e) eps[size_t(t * E + e)] = rng.normal();
    }
    h.forward(x.data(), T, true, 123);
    const auto train = h.dense_weights();
    EXPECT_TRUE(test::all_close(train, expected_gates(h, x.data(), T, eps), 1e-14, 1e-13));
    // The noise matters, the same seed repeats it, and another seed changes it.
    EXPECT_FALSE(test::all_close(train, expected_gates(h, x.data(), T, std::vector<double>(T * E)),
                                 1e-6, 0));
    h.forward(x.data(), T, true, 123);
    EXPECT_EQ(h.dense_weights(), train);
    h.forward(x.data(), T, true, 124);
    EXPECT_NE(h.dense_weights(), train);
    // The hook replaces the generator; null restores it.
    std::vector<double> zeros(size_t(T * E), 0.0);
    sparse::set_noisy_topk_noise<double>(*h.router, zeros.data());
    h.forward(x.data(), T, true, 123);
    EXPECT_TRUE(
        test::all_close(h.dense_weights(), expected_gates(h, x.data(), T, zeros), 1e-14, 1e-13));
    sparse::set_noisy_topk_noise<double>(*h.router, nullptr);
    h.forward(x.data(), T, true, 123);
    EXPECT_EQ(h.dense_weights(), train);
}

TEST(NoisyTopk, CapacityKeepsTheHighestGates) {
    const int64_t T = 64, E = 8, k = 2, d = 5;
    auto cfg = noisy_cfg(E, k, d);
    cfg.capacity_factor = 1.0;
    test::RouterHarness<double> h(cfg, T);
    randomize(h, 9);
    h.param("router.b")[3] = 4.0;  // everyone wants expert 3: it must drop
    auto x = test::random_normal(size_t(T * d), 8);
    h.forward(x.data(), T, true, 2);
    const int64_t cap = int64_t(std::ceil(1.0 * T * k / E));
    EXPECT_TRUE(test::plan_invariants(h.plan, T * k, cap));
    EXPECT_EQ(h.plan.count(3), cap);
    EXPECT_GT(h.plan.dropped, 0);
}

TEST(NoisyTopk, BackwardMatchesFiniteDifferencesOverSizes) {
    const int64_t d = 4;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(2, E)}) {
                SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E << " k=" << k);
                test::RouterHarness<double> h(noisy_cfg(E, k, d), T);
                randomize(h, 21);
                auto x = test::random_normal(size_t(T * d), 22);
                test::check_router_gradients(h, x, T, {"router.w", "router.w_noise", "router.b"},
                                             /*training=*/true, /*seed=*/5);
            }
}

TEST(NoisyTopk, BackwardMatchesFiniteDifferencesInEvalWithKEqualsEAndWithJitter) {
    const int64_t T = 7, d = 4;
    {
        test::RouterHarness<double> h(noisy_cfg(8, 3, d), T);
        randomize(h, 31);
        auto x = test::random_normal(size_t(T * d), 32);
        test::check_router_gradients(h, x, T, {"router.w", "router.w_noise", "router.b"}, false, 0);
    }
    {
        test::RouterHarness<double> h(noisy_cfg(8, 8, d), T);
        randomize(h, 33);
        auto x = test::random_normal(size_t(T * d), 34);
        test::check_router_gradients(h, x, T, {"router.w", "router.w_noise", "router.b"}, true, 3);
    }
    {
        auto cfg = noisy_cfg(8, 2, d);
        cfg.jitter = 0.2;
        test::RouterHarness<double> h(cfg, T);
        randomize(h, 35);
        auto x = test::random_normal(size_t(T * d), 36);
        test::check_router_gradients(h, x, T, {"router.w", "router.w_noise", "router.b"}, true, 4);
    }
}

TEST(NoisyTopk, SameResultsForAnyThreadCount) {
    // 512 tokens x 64 experts = 32k gate entries: the parallel loops run.
    test::check_same_for_any_thread_count(noisy_cfg(64, 4, 8), 512, true,
                                          {"router.w", "router.w_noise", "router.b"});
}

// ---- the whole layer against the dense reference ----

std::function<void(Arena&, const std::string&)> noisy_params(uint64_t seed, double favour = 0) {
    return [=](Arena& p, const std::string& prefix) {
        for (auto [n, scale, s] : {std::tuple{"router.w", 1.0, seed},
                                   {"router.w_noise", 0.5, seed + 1},
                                   {"router.b", 0.3, seed + 2}}) {
            const Tensor t = p.get(prefix + n);
            const auto v = test::random_normal(size_t(t.numel()), s, scale);
            std::copy(v.begin(), v.end(), t.ptr<double>());
        }
        p.get(prefix + "router.b").ptr<double>()[0] += favour;
    };
}

sparse::MoeConfig layer_cfg(int64_t E, int64_t k) {
    auto c = noisy_cfg(E, k, 4);
    c.d_expert = 3;
    return c;
}

TEST(NoisyTopkLayer, MatchesReferenceOverSizes) {
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(2, E), E}) {
                if (E == 64 && k == E && T == 64) continue;  // 4096 rows: slow, and k=E is covered
                SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E << " k=" << k);
                test::check_layer_against_reference(layer_cfg(E, k), T, true, 3, nullptr,
                                                    noisy_params(50), false);
            }
}

TEST(NoisyTopkLayer, MatchesReferenceAndFiniteDifferencesWithOneExpertTakingAll) {
    // k = 1 and expert 0 favoured by +30: every token goes to expert 0 and the others get
    // none; then a spread-out batch with capacity drops, in evaluation.
    test::check_layer_against_reference(layer_cfg(8, 1), 7, true, 3, nullptr, noisy_params(60, 30),
                                        true);
    auto c = layer_cfg(8, 2);
    c.capacity_factor = 0.5;
    c.causal = false;  // capacity by probability is allowed only without a causal mask
    test::check_layer_against_reference(c, 7, false, 0, nullptr, noisy_params(61), true);
    test::check_layer_against_reference(layer_cfg(8, 2), 7, true, 9, nullptr, noisy_params(62),
                                        true);
}

// ---- PyTorch ----

class NoisyTopkFixture : public ::testing::Test {
  protected:
    test::Fixture fx{"noisy_topk"};
    std::vector<int64_t> sizes = fx.get_int("sizes");
    const int64_t T = sizes[0], d = sizes[1], E = sizes[2], k = sizes[3];
    std::vector<double> coefs = fx.get("coefs");

    sparse::MoeConfig config() const {
        auto c = noisy_cfg(E, k, d);
        c.importance_coef = coefs[0];
        c.noisy_topk.load_coef = coefs[1];
        c.aux_loss_coef = coefs[2];
        c.z_loss_coef = coefs[3];
        return c;
    }

    template <class R>
    void run(const std::string& mode, double atol, double rtol) {
        SCOPED_TRACE(mode);
        test::RouterHarness<R> h(config(), T);
        for (const char* n : {"w", "w_noise", "b"}) {
            const auto v = fx.get(n);
            std::transform(v.begin(), v.end(), h.param(std::string("router.") + n),
                           [](double a) { return R(a); });
        }
        std::vector<R> x(size_t(T * d)), eps(size_t(T * E));
        const auto xd = fx.get("x"), epsd = fx.get("eps"), dg = fx.get("dg");
        std::transform(xd.begin(), xd.end(), x.begin(), [](double a) { return R(a); });
        std::transform(epsd.begin(), epsd.end(), eps.begin(), [](double a) { return R(a); });
        sparse::set_noisy_topk_noise<R>(*h.router, eps.data());
        h.forward(x.data(), T, mode == "train", 0);
        EXPECT_TRUE(test::all_close(h.dense_weights(), fx.get(mode + ".gates"), atol, rtol));
        const auto L = fx.get(mode + ".losses");
        EXPECT_NEAR(h.losses.importance_loss, L[0], atol + rtol * std::abs(L[0]));
        EXPECT_NEAR(h.losses.load_loss, L[1], atol + rtol * std::abs(L[1]));
        EXPECT_NEAR(h.losses.aux_loss, L[2], atol + rtol * std::abs(L[2]));
        EXPECT_NEAR(h.losses.z_loss, L[3], atol + rtol * std::abs(L[3]));
        std::vector<R> d_row(size_t(h.plan.rows())), d_x(x.size(), R(0));
        for (int64_t r = 0; r < h.plan.rows(); ++r)
            d_row[size_t(r)] = R(dg[size_t(h.plan.row_token[r] * E + h.expert_of_row(r))]);
        h.grads.zero();
        h.router->backward(h.in, h.plan, d_row.data(), d_x.data());
        EXPECT_TRUE(test::all_close(std::span<const R>(d_x),
                                    std::span<const double>(fx.get(mode + ".dx")), atol, rtol));
        for (const char* n : {"w", "w_noise", "b"})
            EXPECT_TRUE(
                test::all_close(std::span<const R>(h.grad(std::string("router.") + n),
                                                   size_t(h.numel(std::string("router.") + n))),
                                std::span<const double>(fx.get(mode + ".d" + n)), atol, rtol))
                << n;
    }
};

TEST_F(NoisyTopkFixture, DoubleMatchesTorch) {
    run<double>("train", 1e-12, 1e-10);
    run<double>("eval", 1e-12, 1e-10);
}

TEST_F(NoisyTopkFixture, FloatMatchesTorch) {
    // Logits of |~3| from 5 products, then exp, Phi and CV^2 of sums over 9 tokens: a few
    // hundred eps of relative error at worst (4e-5), well under any real formula error.
    run<float>("train", 512 * kEpsF, 256 * kEpsF);
    run<float>("eval", 512 * kEpsF, 256 * kEpsF);
}

}  // namespace
}  // namespace moe
