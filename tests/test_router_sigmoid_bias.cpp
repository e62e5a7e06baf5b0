// sigmoid_bias router (DeepSeek-V3): the choice by s + selection bias (with and without
// group-limited routing) against a direct computation over the size sweep, weights from the
// unbiased scores, the bias update rule of after_step, the bias untouched by gradients and
// AdamW, finite differences, the whole layer against the dense reference, and PyTorch.
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <tuple>

#include "router_harness.h"
#include "train/adamw.h"

namespace moe {
namespace {

constexpr double kEpsF = std::numeric_limits<float>::epsilon();

sparse::MoeConfig sb_cfg(int64_t E, int64_t k, int64_t d, int64_t groups = 1, int64_t kgroups = 1) {
    sparse::MoeConfig c;
    c.router = "sigmoid_bias";
    c.n_experts = E;
    c.top_k = k;
    c.d_model = d;
    c.sigmoid_bias.n_groups = groups;
    c.sigmoid_bias.topk_groups = kgroups;
    c.aux_loss_coef = 0.4;
    c.z_loss_coef = 0.05;
    c.importance_coef = 0.3;
    c.sigmoid_bias.bias_update_rate = 0.01;
    return c;
}

template <class R>
void randomize(test::RouterHarness<R>& h, uint64_t seed, double bias_scale = 0.5) {
    h.randomize("router.w", seed, 1.0);
    h.randomize("router.b", seed + 1, 0.3);
    h.randomize("router.selection_bias", seed + 2, bias_scale);
}

// The chosen set and weights [T, E] computed directly from the definition.
template <class R>
std::vector<double> expected_weights(const test::RouterHarness<R>& h, const R* x, int64_t T) {
    const auto& c = h.cfg;
    const int64_t E = c.n_experts, d = c.d_model, G = c.sigmoid_bias.n_groups, gs = E / G;
    std::vector<double> out(size_t(T * E), 0.0);
    for (int64_t t = 0; t < T; ++t) {
        std::vector<double> s(static_cast<size_t>(E)), sel(static_cast<size_t>(E));
        for (int64_t e = 0; e < E; ++e) {
            double l = double(h.param("router.b")[e]);
            for (int64_t i = 0; i < d; ++i)
                l += double(x[t * d + i]) * double(h.param("router.w")[e * d + i]);
            s[size_t(e)] = 1 / (1 + std::exp(-l));
            sel[size_t(e)] = s[size_t(e)] + double(h.param("router.selection_bias")[e]);
        }
        std::vector<bool> allowed(static_cast<size_t>(E), true);
        if (G > 1) {
            std::vector<std::pair<double, int64_t>> gscore;
            for (int64_t g = 0; g < G; ++g) {
                std::vector<double> v(sel.begin() + g * gs, sel.begin() + (g + 1) * gs);
                std::sort(v.rbegin(), v.rend());
                gscore.push_back({-(v[0] + (gs > 1 ? v[1] : 0.0)), g});
            }
            std::sort(gscore.begin(), gscore.end());
            allowed.assign(size_t(E), false);
            for (int64_t j = 0; j < c.sigmoid_bias.topk_groups; ++j)
                for (int64_t e = gscore[size_t(j)].second * gs;
                     e < (gscore[size_t(j)].second + 1) * gs; ++e)
                    allowed[size_t(e)] = true;
        }
        std::vector<int64_t> idx;
        for (int64_t e = 0; e < E; ++e)
            if (allowed[size_t(e)]) idx.push_back(e);
        std::stable_sort(idx.begin(), idx.end(),
                         [&](int64_t a, int64_t b) { return sel[size_t(a)] > sel[size_t(b)]; });
        double sum = 0;
        for (int64_t j = 0; j < c.top_k; ++j) sum += s[size_t(idx[size_t(j)])];
        for (int64_t j = 0; j < c.top_k; ++j)
            out[size_t(t * E + idx[size_t(j)])] = c.sigmoid_bias.route_scale *
                                                  s[size_t(idx[size_t(j)])] /
                                                  (c.softmax_topk.renormalize ? sum : 1.0);
    }
    return out;
}

TEST(SigmoidBias, ChoiceAndWeightsOverSizes) {
    const int64_t d = 5;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(2, E), E})
                for (bool renorm : {true, false})
                    for (int64_t G : {int64_t(1), E >= 8 ? E / 4 : int64_t(1)}) {
                        const int64_t KG = G > 1 ? G / 2 : 1;
                        if (k > KG * (E / G)) continue;
                        SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E << " k=" << k
                                                          << " renorm=" << renorm << " G=" << G);
                        auto c = sb_cfg(E, k, d, G, KG);
                        c.softmax_topk.renormalize = renorm;
                        c.sigmoid_bias.route_scale = 2.5;
                        test::RouterHarness<float> h(c, 64);
                        randomize(h, 3);
                        auto x = test::random_normal_f32(size_t(T * d), 4);
                        h.forward(x.data(), T);
                        ASSERT_TRUE(test::plan_invariants(h.plan, T * k, -1));
                        const auto want = expected_weights(h, x.data(), T);
                        EXPECT_TRUE(test::all_close(h.dense_weights(), want, 8 * kEpsF, 8 * kEpsF));
                        for (int64_t t = 0; t < T && renorm; ++t) {
                            double s = 0;
                            for (int64_t e = 0; e < E; ++e) s += want[size_t(t * E + e)];
                            EXPECT_NEAR(s, 2.5, 1e-12);  // sums to route_scale
                        }
                        // A token's experts span at most topk_groups groups.
                        for (int64_t t = 0; t < T && G > 1; ++t) {
                            std::vector<int> used(static_cast<size_t>(G), 0);
                            for (int64_t i = h.plan.token_offsets[t];
                                 i < h.plan.token_offsets[t + 1]; ++i)
                                used[size_t(h.expert_of_row(h.plan.token_rows[i]) / (E / G))] = 1;
                            EXPECT_LE(std::accumulate(used.begin(), used.end(), 0), KG);
                        }
                    }
}

TEST(SigmoidBias, BiasChoosesButDoesNotWeigh) {
    const int64_t T = 7, E = 8, d = 5;
    auto c = sb_cfg(E, 1, d);
    c.softmax_topk.renormalize = false;
    test::RouterHarness<double> h(c, T);
    randomize(h, 5, 0.0);
    auto x = test::random_normal(size_t(T * d), 6);
    h.forward(x.data(), T);
    const auto unbiased = h.dense_weights();
    h.param("router.selection_bias")[3] = 5.0;  // beats any sigmoid gap
    h.forward(x.data(), T);
    EXPECT_EQ(h.plan.count(3), T);
    EXPECT_NE(h.dense_weights(), unbiased);
    for (int64_t t = 0; t < T; ++t) {
        const double l = [&] {
            double v = h.param("router.b")[3];
            for (int64_t i = 0; i < d; ++i)
                v += x[size_t(t * d + i)] * h.param("router.w")[3 * d + i];
            return v;
        }();
        EXPECT_NEAR(h.dense_weights()[size_t(t * E + 3)], 1 / (1 + std::exp(-l)), 1e-15);
    }
}

TEST(SigmoidBias, GroupLimitKeepsTheBestGroupsByTopTwoSum) {
    // One token, 8 experts in 4 groups of 2; keep 1 group, choose 2 experts. Group scores
    // (sum of the group's two): g0 = .9+.1 = 1.0, g1 = .6+.6 = 1.2, g2 = .95+.0 = .95,
    // g3 = .5+.5 = 1.0. The best single experts (.95, .9) are in groups 2 and 0, but group
    // 1 wins, so the token gets experts 2 and 3.
    auto c = sb_cfg(8, 2, 1, 4, 1);
    c.softmax_topk.renormalize = false;
    test::RouterHarness<double> h(c, 1);
    std::fill(h.param("router.w"), h.param("router.w") + 8, 0.0);
    std::fill(h.param("router.b"), h.param("router.b") + 8, 0.0);  // s = 0.5 everywhere
    const double bias[8] = {0.4, -0.4, 0.1, 0.1, 0.45, -0.5, 0.0, 0.0};
    std::copy(bias, bias + 8, h.param("router.selection_bias"));
    const double x = 1.0;
    h.forward(&x, 1);
    EXPECT_EQ(h.plan.count(2), 1);
    EXPECT_EQ(h.plan.count(3), 1);
    EXPECT_EQ(h.plan.rows(), 2);
    EXPECT_EQ(h.dense_weights()[2], 0.5);  // the unbiased score
    // Without the group limit the best two overall are chosen.
    auto c1 = sb_cfg(8, 2, 1);
    test::RouterHarness<double> h1(c1, 1);
    std::fill(h1.param("router.w"), h1.param("router.w") + 8, 0.0);
    std::copy(bias, bias + 8, h1.param("router.selection_bias"));
    h1.forward(&x, 1);
    EXPECT_EQ(h1.plan.count(4), 1);
    EXPECT_EQ(h1.plan.count(0), 1);
}

TEST(SigmoidBias, AfterStepMovesTheBiasBySignOfTheLoadError) {
    const int64_t E = 4;
    test::RouterHarness<double> h(sb_cfg(E, 1, 2), 8);
    std::fill(h.param("router.selection_bias"), h.param("router.selection_bias") + E, 0.25);
    // 8 rows: counts 5, 2, 0, 1 against a mean of 2.
    int64_t offsets[E + 1] = {0, 5, 7, 7, 8};
    sparse::RoutingPlan<double> plan;
    plan.T = 8;
    plan.E = E;
    plan.offsets = offsets;
    h.router->after_step(plan);
    const double* b = h.param("router.selection_bias");
    EXPECT_EQ(b[0], 0.25 - 0.01);  // overloaded: down by gamma
    EXPECT_EQ(b[1], 0.25);         // at the mean: unchanged
    EXPECT_EQ(b[2], 0.25 + 0.01);  // underloaded: up by gamma
    EXPECT_EQ(b[3], 0.25 + 0.01);
    // The bias gets no gradient.
    auto x = test::random_normal(8 * 2, 1);
    h.forward(x.data(), 8);
    std::vector<double> d_row(size_t(h.plan.rows()), 1.0), d_x(x.size(), 0.0);
    h.grads.zero();
    h.router->backward(h.in, h.plan, d_row.data(), d_x.data());
    for (int64_t e = 0; e < E; ++e) EXPECT_EQ(h.grad("router.selection_bias")[e], 0.0);
}

TEST(SigmoidBias, AdamWLeavesTheBiasAloneAndAfterStepBalancesTheLoad) {
    // 300 steps of tiny float GEMMs: one thread, so OpenMP barriers on a busy machine do
    // not cost seconds.
    const int threads = num_threads();
    set_num_threads(1);
    const int64_t T = 64, E = 8, d = 6;
    auto c = sb_cfg(E, 2, d);
    test::RouterHarness<float> h(c, T);
    randomize(h, 7, 0.0);
    h.param("router.b")[0] += 3.0;  // expert 0 wanted by nearly everyone
    auto x = test::random_normal_f32(size_t(T * d), 8);
    train::AdamW opt(h.params, train::AdamWConfig{});
    auto max_over_mean = [&] {
        int64_t m = 0;
        for (int64_t e = 0; e < E; ++e) m = std::max(m, h.plan.count(e));
        return double(m) * double(E) / double(h.plan.rows());
    };
    h.forward(x.data(), T, true);
    const double before = max_over_mean();
    std::vector<float> d_row(size_t(h.router->max_rows(T)));
    std::vector<float> d_x(x.size());
    for (int step = 0; step < 300; ++step) {
        h.forward(x.data(), T, true);
        std::fill(d_row.begin(), d_row.end(), 0.1f);
        h.grads.zero();
        h.router->backward(h.in, h.plan, d_row.data(), d_x.data());
        const std::vector<float> bias(h.param("router.selection_bias"),
                                      h.param("router.selection_bias") + E);
        const float w0 = h.param("router.w")[0];
        opt.step(h.params, h.grads, 1e-3f);
        EXPECT_EQ(std::vector<float>(h.param("router.selection_bias"),
                                     h.param("router.selection_bias") + E),
                  bias);  // bit-identical through AdamW
        if (step == 0) {
            EXPECT_NE(h.param("router.w")[0], w0);  // while the gate trains
        }
        h.router->after_step(h.plan);
    }
    h.forward(x.data(), T, true);
    EXPECT_GT(before, 2.5);  // expert 0 takes 46 of the 128 rows (2.9x the mean)
    EXPECT_LT(max_over_mean(), 1.6) << "before: " << before;
    const float* b = h.param("router.selection_bias");
    EXPECT_EQ(std::min_element(b, b + E) - b, 0);  // the crowded expert is pushed down most
    EXPECT_LT(b[0], -0.1f);
    set_num_threads(threads);
}

TEST(SigmoidBias, BackwardMatchesFiniteDifferencesOverSizes) {
    const int64_t d = 4;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(2, E)})
                for (bool renorm : {true, false}) {
                    const int64_t G = E >= 8 ? 4 : 1, KG = G > 1 ? 2 : 1;
                    SCOPED_TRACE(::testing::Message()
                                 << "T=" << T << " E=" << E << " k=" << k << " renorm=" << renorm);
                    auto c = sb_cfg(E, k, d, G, KG);
                    c.softmax_topk.renormalize = renorm;
                    c.sigmoid_bias.route_scale = 1.7;
                    test::RouterHarness<double> h(c, T);
                    randomize(h, 9);
                    auto x = test::random_normal(size_t(T * d), 10);
                    test::check_router_gradients(
                        h, x, T, {"router.w", "router.b", "router.selection_bias"}, false, 0);
                }
}

TEST(SigmoidBias, SameResultsForAnyThreadCount) {
    // 512 tokens x 64 experts = 32k gate entries: the parallel loops run.
    test::check_same_for_any_thread_count(sb_cfg(64, 6, 8, 8, 3), 512, false,
                                          {"router.w", "router.b", "router.selection_bias"});
}

// ---- the whole layer against the dense reference ----

std::function<void(Arena&, const std::string&)> sb_params(uint64_t seed, double favour = 0) {
    return [=](Arena& p, const std::string& prefix) {
        for (auto [n, scale, s] : {std::tuple{"router.w", 1.0, seed},
                                   {"router.b", 0.3, seed + 1},
                                   {"router.selection_bias", 0.5, seed + 2}}) {
            const Tensor t = p.get(prefix + n);
            const auto v = test::random_normal(size_t(t.numel()), s, scale);
            std::copy(v.begin(), v.end(), t.ptr<double>());
        }
        p.get(prefix + "router.selection_bias").ptr<double>()[0] += favour;
    };
}

TEST(SigmoidBiasLayer, MatchesReferenceOverSizes) {
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(2, E), E}) {
                if (E == 64 && k == E && T == 64) continue;  // 4096 rows: slow; k=E is covered
                SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E << " k=" << k);
                auto c = sb_cfg(E, k, 4);
                c.d_expert = 3;
                test::check_layer_against_reference(c, T, true, 0, nullptr, sb_params(40), false);
            }
}

TEST(SigmoidBiasLayer, FiniteDifferencesWithGroupsAndOneExpertTakingAll) {
    auto c = sb_cfg(8, 3, 4, 4, 2);
    c.d_expert = 3;
    c.sigmoid_bias.route_scale = 2.5;
    test::check_layer_against_reference(c, 7, true, 0, nullptr, sb_params(50), true);
    auto c1 = sb_cfg(8, 1, 4);
    c1.d_expert = 3;
    c1.softmax_topk.renormalize = false;
    test::check_layer_against_reference(c1, 7, true, 0, nullptr, sb_params(51, 10.0), true);
    // The layer's after_step reaches the router: expert 0 took every token.
    sparse::MoeLayer<double> layer(c1, 7);
    Arena params;
    layer.declare(params, "m.");
    params.allocate();
    Arena grads = params.clone_layout();
    layer.bind(params, grads);
    Rng rng(1);
    layer.init_weights(rng);
    sb_params(51, 10.0)(params, "m.");
    const double b0 = params.get("m.router.selection_bias").ptr<double>()[0];
    const auto x = test::random_normal(7 * 4, 2);
    std::vector<double> out(x.size());
    layer.forward(out.data(), x.data(), 7);
    ASSERT_EQ(layer.plan().count(0), 7);
    layer.after_step();
    EXPECT_EQ(params.get("m.router.selection_bias").ptr<double>()[0], b0 - 0.01);
}

// ---- PyTorch ----

class SigmoidBiasFixture : public ::testing::Test {
  protected:
    test::Fixture fx{"sigmoid_bias"};
    std::vector<int64_t> sizes = fx.get_int("sizes");
    const int64_t T = sizes[0], d = sizes[1], E = sizes[2];
    std::vector<double> coefs = fx.get("coefs");

    template <class R>
    void run(const std::string& name, double atol, double rtol) {
        SCOPED_TRACE(name);
        const auto conf = fx.get_int(name + ".config");
        auto c = sb_cfg(E, conf[0], d, conf[1], conf[2]);
        c.softmax_topk.renormalize = conf[3] != 0;
        c.sigmoid_bias.route_scale = fx.get(name + ".scale")[0];
        c.aux_loss_coef = coefs[0];
        c.z_loss_coef = coefs[1];
        c.importance_coef = coefs[2];
        test::RouterHarness<R> h(c, T);
        auto put = [&](const std::string& src, const std::string& dst) {
            const auto v = fx.get(src);
            std::transform(v.begin(), v.end(), h.param(dst), [](double a) { return R(a); });
        };
        put("w", "router.w");
        put("b", "router.b");
        put(name + ".selection_bias", "router.selection_bias");
        const auto xd = fx.get("x"), dg = fx.get("dg");
        std::vector<R> x(xd.size());
        std::transform(xd.begin(), xd.end(), x.begin(), [](double a) { return R(a); });
        h.forward(x.data(), T);
        EXPECT_TRUE(test::all_close(h.dense_weights(), fx.get(name + ".weight"), atol, rtol));
        const auto L = fx.get(name + ".losses");
        EXPECT_NEAR(h.losses.aux_loss, L[0], atol + rtol * std::abs(L[0]));
        EXPECT_NEAR(h.losses.z_loss, L[1], atol + rtol * std::abs(L[1]));
        EXPECT_NEAR(h.losses.importance_loss, L[2], atol + rtol * std::abs(L[2]));
        std::vector<R> d_row(size_t(h.plan.rows())), d_x(x.size(), R(0));
        for (int64_t r = 0; r < h.plan.rows(); ++r)
            d_row[size_t(r)] = R(dg[size_t(h.plan.row_token[r] * E + h.expert_of_row(r))]);
        h.grads.zero();
        h.router->backward(h.in, h.plan, d_row.data(), d_x.data());
        EXPECT_TRUE(test::all_close(std::span<const R>(d_x),
                                    std::span<const double>(fx.get(name + ".dx")), atol, rtol));
        for (const char* n : {"w", "b"})
            EXPECT_TRUE(
                test::all_close(std::span<const R>(h.grad(std::string("router.") + n),
                                                   size_t(h.numel(std::string("router.") + n))),
                                std::span<const double>(fx.get(name + ".d" + n)), atol, rtol))
                << n;
    }
};

TEST_F(SigmoidBiasFixture, DoubleMatchesTorch) {
    for (const char* name : {"plain", "bias", "group", "norenorm"}) run<double>(name, 1e-12, 1e-10);
}

TEST_F(SigmoidBiasFixture, FloatMatchesTorch) {
    // Sigmoid of 5-term dot products, sums over 12 tokens: ~100 eps relative at worst.
    for (const char* name : {"plain", "bias", "group", "norenorm"})
        run<float>(name, 256 * kEpsF, 128 * kEpsF);
}

}  // namespace
}  // namespace moe
