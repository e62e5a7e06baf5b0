// switch router: top-1 with capacity. Plan invariants over the size sweep (capacity kept,
// kept + dropped = T, the weight is the chosen probability, who keeps a seat under each drop
// policy), gradients by finite differences with tokens dropped, the whole layer against the
// dense reference (a dropped token gives 0), and PyTorch with both drop policies.
#include <cmath>
#include <functional>
#include <limits>

#include "router_harness.h"

namespace moe {
namespace {

constexpr double kEpsF = std::numeric_limits<float>::epsilon();

sparse::MoeConfig switch_cfg(int64_t E, int64_t d, double cf, sparse::DropPolicy policy) {
    sparse::MoeConfig c;
    c.router = "switch";
    c.n_experts = E;
    c.top_k = 1;
    c.d_model = d;
    c.capacity_factor = cf;
    c.drop_policy = policy;
    c.causal = false;  // capacity by probability is allowed only without a causal mask
    c.aux_loss_coef = 0.4;
    c.z_loss_coef = 0.05;
    c.importance_coef = 0.3;
    return c;
}

template <class R>
void randomize(test::RouterHarness<R>& h, uint64_t seed) {
    h.randomize("router.w", seed, 1.0);
    h.randomize("router.b", seed + 1, 0.5);
}

// softmax(x w^T + b) computed here: [T, E].
template <class R>
std::vector<double> probs_of(const test::RouterHarness<R>& h, const R* x, int64_t T) {
    const int64_t E = h.cfg.n_experts, d = h.cfg.d_model;
    std::vector<double> p(size_t(T * E));
    for (int64_t t = 0; t < T; ++t) {
        double m = -INFINITY, s = 0;
        for (int64_t e = 0; e < E; ++e) {
            double l = double(h.param("router.b")[e]);
            for (int64_t i = 0; i < d; ++i)
                l += double(x[t * d + i]) * double(h.param("router.w")[e * d + i]);
            p[size_t(t * E + e)] = l;
            m = std::max(m, l);
        }
        for (int64_t e = 0; e < E; ++e)
            s += (p[size_t(t * E + e)] = std::exp(p[size_t(t * E + e)] - m));
        for (int64_t e = 0; e < E; ++e) p[size_t(t * E + e)] /= s;
    }
    return p;
}

TEST(Switch, RequiresTopOne) {
    auto c = switch_cfg(4, 3, 1.0, sparse::DropPolicy::probability);
    c.top_k = 2;
    try {
        sparse::make_router<float>(c);
        FAIL() << "top_k = 2 accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("switch"), std::string::npos) << e.what();
    }
}

TEST(Switch, PlanInvariantsOverSizesAndPolicies) {
    const int64_t d = 5;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (double cf : {0.0, 0.5, 1.0, 1.25})
                for (auto policy :
                     {sparse::DropPolicy::probability, sparse::DropPolicy::position}) {
                    SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E << " cf=" << cf
                                                      << " policy=" << int(policy));
                    test::RouterHarness<float> h(switch_cfg(E, d, cf, policy), 64);
                    randomize(h, 3);
                    h.param("router.b")[0] += 1.0;  // crowd expert 0, so capacity bites
                    auto x = test::random_normal_f32(size_t(T * d), 4);
                    h.forward(x.data(), T);
                    const int64_t cap =
                        cf > 0 ? int64_t(std::ceil(cf * double(T) / double(E))) : -1;
                    ASSERT_TRUE(test::plan_invariants(h.plan, T, cap));
                    const auto p = probs_of(h, x.data(), T);
                    // Each token's argmax, and who asked for each expert.
                    std::vector<int32_t> choice(static_cast<size_t>(T));
                    std::vector<std::vector<int32_t>> asked(static_cast<size_t>(E));
                    for (int64_t t = 0; t < T; ++t) {
                        int32_t best = 0;
                        for (int32_t e = 1; e < E; ++e)
                            if (p[size_t(t * E + e)] > p[size_t(t * E + best)]) best = e;
                        choice[size_t(t)] = best;
                        asked[size_t(best)].push_back(int32_t(t));
                    }
                    int64_t expect_dropped = 0;
                    for (int64_t e = 0; e < E; ++e) {
                        const int64_t n = int64_t(asked[size_t(e)].size());
                        const int64_t kept = cap < 0 ? n : std::min(n, cap);
                        expect_dropped += n - kept;
                        ASSERT_EQ(h.plan.count(e), kept) << "expert " << e;
                        double min_kept = INFINITY;
                        for (int64_t r = h.plan.offsets[e]; r < h.plan.offsets[e + 1]; ++r) {
                            const int32_t t = h.plan.row_token[r];
                            ASSERT_EQ(choice[size_t(t)], e) << "token " << t;
                            const double pt = p[size_t(t * E + e)];
                            EXPECT_NEAR(double(h.plan.row_weight[r]), pt,
                                        4 * kEpsF);  // not renormalised
                            min_kept = std::min(min_kept, pt);
                            if (policy == sparse::DropPolicy::position) {  // the first askers
                                EXPECT_EQ(t, asked[size_t(e)][size_t(r - h.plan.offsets[e])]);
                            }
                        }
                        if (policy != sparse::DropPolicy::probability) continue;
                        for (int32_t t : asked[size_t(e)]) {
                            const bool has_row = [&] {
                                for (int64_t r = h.plan.offsets[e]; r < h.plan.offsets[e + 1]; ++r)
                                    if (h.plan.row_token[r] == t) return true;
                                return false;
                            }();
                            if (!has_row) {
                                EXPECT_LE(p[size_t(t * E + e)], min_kept + 4 * kEpsF);
                            }
                        }
                    }
                    EXPECT_EQ(h.plan.dropped, expect_dropped);
                    if (T == 64 && E == 8 && cf == 0.5) {
                        EXPECT_GT(h.plan.dropped, 0);
                    }
                }
}

TEST(Switch, BackwardMatchesFiniteDifferencesWithDrops) {
    const int64_t d = 4;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (auto policy : {sparse::DropPolicy::probability, sparse::DropPolicy::position}) {
                SCOPED_TRACE(::testing::Message()
                             << "T=" << T << " E=" << E << " policy=" << int(policy));
                test::RouterHarness<double> h(switch_cfg(E, d, 1.0, policy), T);
                randomize(h, 11);
                h.param("router.b")[0] += 1.0;
                auto x = test::random_normal(size_t(T * d), 12);
                h.forward(x.data(), T);
                if (T == 64 && E == 8) {
                    EXPECT_GT(h.plan.dropped, 0);
                }
                test::check_router_gradients(h, x, T, {"router.w", "router.b"}, false, 0);
            }
    // Dropless, and with jitter in training.
    auto c = switch_cfg(8, d, 0.0, sparse::DropPolicy::probability);
    c.jitter = 0.1;
    test::RouterHarness<double> h(c, 7);
    randomize(h, 13);
    auto x = test::random_normal(size_t(7 * d), 14);
    test::check_router_gradients(h, x, 7, {"router.w", "router.b"}, true, 6);
}

TEST(Switch, SameResultsForAnyThreadCount) {
    // 512 tokens x 64 experts = 32k gate entries: the parallel loops run.
    test::check_same_for_any_thread_count(switch_cfg(64, 8, 1.0, sparse::DropPolicy::probability),
                                          512, false, {"router.w", "router.b"});
}

// ---- the whole layer against the dense reference ----

std::function<void(Arena&, const std::string&)> switch_params(uint64_t seed, double favour) {
    return [=](Arena& p, const std::string& prefix) {
        const Tensor w = p.get(prefix + "router.w"), b = p.get(prefix + "router.b");
        const auto vw = test::random_normal(size_t(w.numel()), seed, 1.0);
        const auto vb = test::random_normal(size_t(b.numel()), seed + 1, 0.5);
        std::copy(vw.begin(), vw.end(), w.ptr<double>());
        std::copy(vb.begin(), vb.end(), b.ptr<double>());
        b.ptr<double>()[0] += favour;
    };
}

TEST(SwitchLayer, MatchesReferenceOverSizes) {
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (double cf : {0.0, 1.0}) {
                SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E << " cf=" << cf);
                auto c = switch_cfg(E, 4, cf, sparse::DropPolicy::probability);
                c.d_expert = 3;
                test::check_layer_against_reference(c, T, false, 0, nullptr, switch_params(20, 1.0),
                                                    false);
            }
}

TEST(SwitchLayer, DroppedTokensGiveZeroAndGradientsMatch) {
    for (auto policy : {sparse::DropPolicy::probability, sparse::DropPolicy::position}) {
        auto c = switch_cfg(4, 4, 1.0, policy);
        c.d_expert = 3;
        // Expert 0 favoured by +2: it is offered more than its 2 seats.
        test::check_layer_against_reference(c, 7, false, 0, nullptr, switch_params(30, 2.0), true);
        // All on expert 0 (+30): 2 kept, 5 dropped, 3 experts empty.
        test::check_layer_against_reference(c, 7, false, 0, nullptr, switch_params(31, 30.0), true);
    }
    // The drop is visible in the layer output: a dropped token's row is exactly 0.
    auto c = switch_cfg(4, 4, 1.0, sparse::DropPolicy::position);
    c.d_expert = 3;
    sparse::MoeLayer<double> layer(c, 7);
    Arena params;
    layer.declare(params, "m.");
    params.allocate();
    Arena grads = params.clone_layout();
    layer.bind(params, grads);
    Rng rng(1);
    layer.init_weights(rng, 0.5);
    switch_params(31, 30.0)(params, "m.");
    const auto x = test::random_normal(7 * 4, 2);
    std::vector<double> out(x.size());
    layer.forward(out.data(), x.data(), 7);
    ASSERT_EQ(layer.plan().dropped, 5);
    for (int64_t t = 0; t < 7; ++t) {
        const bool kept = layer.plan().token_offsets[t + 1] > layer.plan().token_offsets[t];
        EXPECT_EQ(kept, t < 2) << t;  // position policy: the first two keep their seats
        for (int64_t i = 0; i < 4 && !kept; ++i) EXPECT_EQ(out[size_t(t * 4 + i)], 0.0);
    }
}

// ---- PyTorch ----

class SwitchFixture : public ::testing::Test {
  protected:
    test::Fixture fx{"switch"};
    std::vector<int64_t> sizes = fx.get_int("sizes");
    const int64_t T = sizes[0], d = sizes[1], E = sizes[2];
    std::vector<double> coefs = fx.get("coefs");

    template <class R>
    void run(const std::string& policy, double atol, double rtol) {
        SCOPED_TRACE(policy);
        auto c = switch_cfg(E, d, coefs[3],
                            policy == "probability" ? sparse::DropPolicy::probability
                                                    : sparse::DropPolicy::position);
        c.aux_loss_coef = coefs[0];
        c.z_loss_coef = coefs[1];
        c.importance_coef = coefs[2];
        test::RouterHarness<R> h(c, T);
        for (const char* n : {"w", "b"}) {
            const auto v = fx.get(n);
            std::transform(v.begin(), v.end(), h.param(std::string("router.") + n),
                           [](double a) { return R(a); });
        }
        const auto xd = fx.get("x"), dw = fx.get("dw");
        std::vector<R> x(xd.size());
        std::transform(xd.begin(), xd.end(), x.begin(), [](double a) { return R(a); });
        h.forward(x.data(), T);
        // Token t's expert and weight (-1 and 0 when dropped).
        const auto want_e = fx.get_int(policy + ".expert");
        const auto want_w = fx.get(policy + ".weight");
        std::vector<double> got_w(size_t(T), 0.0);
        std::vector<int64_t> got_e(size_t(T), -1);
        for (int64_t r = 0; r < h.plan.rows(); ++r) {
            got_e[size_t(h.plan.row_token[r])] = h.expert_of_row(r);
            got_w[size_t(h.plan.row_token[r])] = double(h.plan.row_weight[r]);
        }
        EXPECT_EQ(got_e, want_e);
        EXPECT_TRUE(test::all_close(got_w, want_w, atol, rtol));
        const auto L = fx.get(policy + ".losses");
        EXPECT_NEAR(h.losses.aux_loss, L[0], atol + rtol * std::abs(L[0]));
        EXPECT_NEAR(h.losses.z_loss, L[1], atol + rtol * std::abs(L[1]));
        EXPECT_NEAR(h.losses.importance_loss, L[2], atol + rtol * std::abs(L[2]));
        std::vector<R> d_row(size_t(h.plan.rows())), d_x(x.size(), R(0));
        for (int64_t r = 0; r < h.plan.rows(); ++r)
            d_row[size_t(r)] = R(dw[size_t(h.plan.row_token[r])]);
        h.grads.zero();
        h.router->backward(h.in, h.plan, d_row.data(), d_x.data());
        EXPECT_TRUE(test::all_close(std::span<const R>(d_x),
                                    std::span<const double>(fx.get(policy + ".dx")), atol, rtol));
        for (const char* n : {"w", "b"})
            EXPECT_TRUE(
                test::all_close(std::span<const R>(h.grad(std::string("router.") + n),
                                                   size_t(h.numel(std::string("router.") + n))),
                                std::span<const double>(fx.get(policy + ".d" + n)), atol, rtol))
                << n;
    }
};

TEST_F(SwitchFixture, DoubleMatchesTorch) {
    run<double>("probability", 1e-12, 1e-10);
    run<double>("position", 1e-12, 1e-10);
}

TEST_F(SwitchFixture, FloatMatchesTorch) {
    // Logits up to ~8 (z-loss 19), exp and sums over 16 tokens: ~100 eps relative at most.
    run<float>("probability", 256 * kEpsF, 128 * kEpsF);
    run<float>("position", 256 * kEpsF, 128 * kEpsF);
}

}  // namespace
}  // namespace moe
