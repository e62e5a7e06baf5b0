// expert_choice router: each expert takes exactly C = min(T, ceil(T cf / E)) tokens, the
// top C of its column of the softmax scores, over the size sweep; the causal refusal; a
// token no expert took gets zero routed output; gradients by finite differences; and the
// whole layer against the dense reference (every expert on every token, masked by a gate
// computed here from scratch) on outputs and every gradient.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "moe/moe_layer.h"
#include "moe_reference.h"
#include "router_harness.h"

namespace moe {
namespace {

using sparse::MoeConfig;

MoeConfig ec_cfg(int64_t E, int64_t k, int64_t d, double cf = 0) {
    MoeConfig c;
    c.router = "expert_choice";
    c.causal = false;
    c.n_experts = E;
    c.top_k = k;
    c.d_model = d;
    c.d_expert = 5;
    c.capacity_factor = cf;
    c.z_loss_coef = 0.1;
    return c;
}

int64_t seats(int64_t T, int64_t E, double cf) {
    return std::min<int64_t>(T, int64_t(std::ceil(double(T) * cf / double(E))));
}

std::vector<double> softmax_rows(const std::vector<double>& l, int64_t T, int64_t E) {
    std::vector<double> p(l.size());
    for (int64_t t = 0; t < T; ++t) {
        const double m = *std::max_element(l.begin() + t * E, l.begin() + (t + 1) * E);
        double s = 0;
        for (int64_t e = 0; e < E; ++e) s += std::exp(l[size_t(t * E + e)] - m);
        for (int64_t e = 0; e < E; ++e)
            p[size_t(t * E + e)] = std::exp(l[size_t(t * E + e)] - m) / s;
    }
    return p;
}

// The expert-choice gate written from scratch: each expert sorts all tokens by score
// (ties to the lower token) and keeps the first C; gate[t, e] = p[t, e] where kept.
std::vector<double> dense_ec_gate(const std::vector<double>& p, int64_t T, int64_t E, int64_t C) {
    std::vector<double> gate(size_t(T * E), 0.0);
    for (int64_t e = 0; e < E; ++e) {
        std::vector<int64_t> tok(static_cast<size_t>(T));
        std::iota(tok.begin(), tok.end(), 0);
        std::stable_sort(tok.begin(), tok.end(), [&](int64_t a, int64_t b) {
            return p[size_t(a * E + e)] > p[size_t(b * E + e)];
        });
        for (int64_t i = 0; i < C; ++i) gate[size_t(tok[i] * E + e)] = p[size_t(tok[i] * E + e)];
    }
    return gate;
}

// Checks the expert-choice plan of a harness against the scores computed here.
template <class R>
void check_ec_plan(const test::RouterHarness<R>& h, const std::vector<double>& x, int64_t T,
                   double cf_used) {
    const int64_t E = h.cfg.n_experts, d = h.cfg.d_model, C = seats(T, E, cf_used);
    const auto& plan = h.plan;
    std::vector<double> w(h.param("router.w"), h.param("router.w") + E * d);
    std::vector<double> b(h.param("router.b"), h.param("router.b") + E);
    const auto p = softmax_rows(sparse::reference::logits(x, w, b, T, d, E), T, E);
    const double tol = std::is_same_v<R, float> ? 1e-5 : 1e-14;
    ASSERT_EQ(plan.T, T);
    ASSERT_EQ(plan.E, E);
    ASSERT_EQ(plan.rows(), E * C);
    EXPECT_EQ(plan.dropped, 0);
    for (int64_t e = 0; e < E; ++e) {
        EXPECT_EQ(plan.count(e), C) << "expert " << e << " T=" << T << " E=" << E;
        std::vector<char> taken(size_t(T), 0);
        double min_taken = 2;
        for (int64_t r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r) {
            const int32_t t = plan.row_token[r];
            ASSERT_TRUE(t >= 0 && t < T);
            if (r > plan.offsets[e]) {
                EXPECT_LT(plan.row_token[r - 1], t) << "rows not ascending";
            }
            EXPECT_EQ(plan.row_choice[r], t * E + e);
            EXPECT_NEAR(double(plan.row_weight[r]), p[size_t(t * E + e)], tol);
            taken[size_t(t)] = 1;
            min_taken = std::min(min_taken, p[size_t(t * E + e)]);
        }
        // The kept tokens are the top C of the column: no token left out scores higher.
        for (int64_t t = 0; t < T; ++t)
            if (!taken[size_t(t)]) {
                EXPECT_LE(p[size_t(t * E + e)], min_taken + tol);
            }
    }
    // Token index: each token's rows, ascending, and they are its rows.
    ASSERT_EQ(plan.token_offsets[0], 0);
    ASSERT_EQ(plan.token_offsets[T], plan.rows());
    for (int64_t t = 0; t < T; ++t)
        for (int64_t i = plan.token_offsets[t]; i < plan.token_offsets[t + 1]; ++i) {
            EXPECT_EQ(plan.row_token[plan.token_rows[i]], t);
            if (i > plan.token_offsets[t]) {
                EXPECT_LT(plan.token_rows[i - 1], plan.token_rows[i]);
            }
        }
}

TEST(ExpertChoice, EveryExpertTakesItsTopCTokensOverTheSweep) {
    const int64_t d = 4;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), E})
                for (double cf : {0.0, 0.5, 1.25}) {
                    SCOPED_TRACE("T=" + std::to_string(T) + " E=" + std::to_string(E) +
                                 " k=" + std::to_string(k) + " cf=" + std::to_string(cf));
                    test::RouterHarness<double> h(ec_cfg(E, k, d, cf), 64);
                    h.randomize("router.w", 7 + uint64_t(E), 1.0);
                    h.randomize("router.b", 8, 0.5);
                    auto x = test::random_normal(size_t(T * d), 11 + uint64_t(T));
                    h.forward(x.data(), T);
                    check_ec_plan(h, x, T, cf > 0 ? cf : double(k));
                    EXPECT_EQ(h.router->max_rows(64), E * seats(64, E, cf > 0 ? cf : double(k)));
                }
}

TEST(ExpertChoice, FloatPathKeepsTheSameInvariants) {
    const int64_t d = 6;
    for (int64_t T : {7, 64})
        for (int64_t E : {2, 8, 64}) {
            test::RouterHarness<float> h(ec_cfg(E, 2, d), 64);
            auto xd = test::random_normal(size_t(T * d), 3);
            const auto w = test::random_normal(size_t(E * d), 4);
            std::copy(w.begin(), w.end(), h.param("router.w"));
            const auto x = test::to_f32(xd);
            h.forward(x.data(), T);
            check_ec_plan(h, test::to_f64(x), T, 2.0);
        }
}

TEST(ExpertChoice, AllTiedScoresGoToTheFirstTokens) {
    // Zero weights: every score is 1/E, so each expert keeps tokens 0..C-1.
    const int64_t T = 7, E = 4, d = 3;
    test::RouterHarness<double> h(ec_cfg(E, 1, d), T);
    std::fill(h.param("router.w"), h.param("router.w") + E * d, 0.0);
    auto x = test::random_normal(size_t(T * d), 5);
    h.forward(x.data(), T);
    const int64_t C = seats(T, E, 1.0);  // 2
    for (int64_t e = 0; e < E; ++e)
        for (int64_t i = 0; i < C; ++i) {
            EXPECT_EQ(h.plan.row_token[e * C + i], i);
            EXPECT_DOUBLE_EQ(h.plan.row_weight[e * C + i], 0.25);
        }
}

TEST(ExpertChoice, RefusesACausalModel) {
    MoeConfig c = ec_cfg(4, 2, 8);
    c.causal = true;
    try {
        sparse::make_router<float>(c);
        FAIL() << "expert_choice accepted a causal model";
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("router 'expert_choice' sees every token of the batch"),
                  std::string::npos)
            << msg;
        EXPECT_NE(msg.find("cannot be used in a causal model"), std::string::npos) << msg;
        EXPECT_NE(msg.find("set moe.router to a token-choice router"), std::string::npos) << msg;
    }
    EXPECT_THROW(sparse::MoeLayer<double>(c, 16), Error);
    c.causal = false;
    EXPECT_NO_THROW(sparse::make_router<double>(c));
}

TEST(ExpertChoice, GradientsMatchFiniteDifferences) {
    const int64_t d = 4;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64}) {
            if (T * E > 64 * 8) continue;  // the largest case is covered by the layer test
            SCOPED_TRACE("T=" + std::to_string(T) + " E=" + std::to_string(E));
            test::RouterHarness<double> h(ec_cfg(E, 2 <= E ? 2 : 1, d, T > 3 ? 0.0 : 1.5), 64);
            h.randomize("router.w", 21 + uint64_t(E), 1.5);
            h.randomize("router.b", 22, 0.5);
            auto x = test::random_normal(size_t(T * d), 23 + uint64_t(T));
            test::check_router_gradients(h, x, T, {"router.w", "router.b"}, false, 0);
        }
}

// ---- the whole layer against the dense reference ----

struct LayerRig {
    MoeConfig cfg;
    sparse::MoeLayer<double> layer;
    Arena params, grads;
    const std::string prefix = "layers.1.moe.";

    LayerRig(const MoeConfig& c, int64_t max_tokens) : cfg(c), layer(c, max_tokens) {
        layer.declare(params, prefix);
        params.allocate();
        grads = params.clone_layout();
        layer.bind(params, grads);
        Rng rng(5);
        layer.init_weights(rng, 0.4, 0.4);
        const auto w = test::random_normal(size_t(cfg.n_experts * cfg.d_model), 6, 1.5);
        std::copy(w.begin(), w.end(), ptr("router.w"));
        const auto b = test::random_normal(size_t(cfg.n_experts), 7, 0.5);
        std::copy(b.begin(), b.end(), ptr("router.b"));
    }
    double* ptr(const std::string& n) { return params.get(prefix + n).ptr<double>(); }
    std::vector<double> get(const Arena& a, const std::string& n) {
        return sparse::reference::tensor_as_f64(a, prefix + n);
    }
};

TEST(ExpertChoiceLayer, MatchesTheDenseReferenceOnOutputsAndEveryGradient) {
    const int64_t d = 6;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (sparse::ExpertKind kind : {sparse::ExpertKind::swiglu, sparse::ExpertKind::gelu}) {
                if (E == 64 && kind == sparse::ExpertKind::gelu) continue;
                SCOPED_TRACE("T=" + std::to_string(T) + " E=" + std::to_string(E));
                MoeConfig c = ec_cfg(E, std::min<int64_t>(E, 2), d);
                c.expert = kind;
                LayerRig rig(c, 64);
                const auto x = test::random_normal(size_t(T * d), 31 + uint64_t(T));
                const auto d_out = test::random_normal(size_t(T * d), 32);
                std::vector<double> out(size_t(T * d), NAN);
                const double loss = rig.layer.forward(out.data(), x.data(), T);

                // The gate from scratch.
                const auto w = rig.get(rig.params, "router.w"), b = rig.get(rig.params, "router.b");
                const auto logits = sparse::reference::logits(x, w, b, T, d, E);
                const auto p = softmax_rows(logits, T, E);
                const int64_t C = seats(T, E, double(c.top_k));
                const auto gate = dense_ec_gate(p, T, E, C);
                EXPECT_TRUE(test::all_close(sparse::reference::dense_gate(rig.layer.plan()), gate,
                                            1e-15, 0));
                double z = 0;
                std::vector<double> lse(static_cast<size_t>(T));
                for (int64_t t = 0; t < T; ++t) {
                    double m = logits[size_t(t * E)], s = 0;
                    for (int64_t e = 1; e < E; ++e) m = std::max(m, logits[size_t(t * E + e)]);
                    for (int64_t e = 0; e < E; ++e) s += std::exp(logits[size_t(t * E + e)] - m);
                    lse[size_t(t)] = m + std::log(s);
                    z += lse[size_t(t)] * lse[size_t(t)] / double(T);
                }
                EXPECT_NEAR(loss, c.z_loss_coef * z, 1e-12);
                EXPECT_DOUBLE_EQ(rig.layer.losses().aux_loss, 0.0);

                const auto model = sparse::reference::model_from(rig.params, rig.prefix, c);
                EXPECT_TRUE(test::all_close(out, sparse::reference::forward(model, x, T, gate),
                                            1e-12, 1e-10));

                rig.grads.zero();
                std::vector<double> d_x(size_t(T * d), 0.0);
                rig.layer.backward(d_out.data(), d_x.data());
                const auto ref = sparse::reference::backward(model, x, T, gate, d_out);
                // Gate backward: only kept (t, e) carry d_gate; softmax Jacobian; z-loss.
                std::vector<double> dl(size_t(T * E), 0.0);
                for (int64_t t = 0; t < T; ++t) {
                    double dot = 0;
                    for (int64_t e = 0; e < E; ++e) {
                        const size_t i = size_t(t * E + e);
                        dot += (gate[i] != 0 ? ref.d_gate[i] : 0.0) * p[i];
                    }
                    for (int64_t e = 0; e < E; ++e) {
                        const size_t i = size_t(t * E + e);
                        dl[i] = p[i] * ((gate[i] != 0 ? ref.d_gate[i] : 0.0) - dot) +
                                c.z_loss_coef * 2 * lse[size_t(t)] * p[i] / double(T);
                    }
                }
                auto dx_ref = ref.d_x;
                std::vector<double> dw(size_t(E * d), 0.0), db(size_t(E), 0.0);
                for (int64_t t = 0; t < T; ++t)
                    for (int64_t e = 0; e < E; ++e) {
                        const double g = dl[size_t(t * E + e)];
                        db[size_t(e)] += g;
                        for (int64_t i = 0; i < d; ++i) {
                            dx_ref[size_t(t * d + i)] += g * w[size_t(e * d + i)];
                            dw[size_t(e * d + i)] += g * x[size_t(t * d + i)];
                        }
                    }
                EXPECT_TRUE(test::all_close(d_x, dx_ref, 1e-11, 1e-9)) << "d_x";
                EXPECT_TRUE(test::all_close(rig.get(rig.grads, "router.w"), dw, 1e-11, 1e-9));
                EXPECT_TRUE(test::all_close(rig.get(rig.grads, "router.b"), db, 1e-11, 1e-9));
                EXPECT_TRUE(
                    test::all_close(rig.get(rig.grads, "experts.w1"), ref.d_w1, 1e-11, 1e-9));
                EXPECT_TRUE(
                    test::all_close(rig.get(rig.grads, "experts.w2"), ref.d_w2, 1e-11, 1e-9));
                if (kind == sparse::ExpertKind::swiglu) {
                    EXPECT_TRUE(
                        test::all_close(rig.get(rig.grads, "experts.w3"), ref.d_w3, 1e-11, 1e-9));
                }
            }
}

TEST(ExpertChoiceLayer, ATokenNoExpertTookGetsZeroRoutedOutput) {
    // cf = 0.25 with T = 16, E = 2: each expert takes 2 tokens, so at least 12 of 16 get
    // none; their output must be exactly 0, the others not.
    const int64_t T = 16, E = 2, d = 5;
    LayerRig rig(ec_cfg(E, 1, d, 0.25), T);
    const auto x = test::random_normal(size_t(T * d), 41);
    std::vector<double> out(size_t(T * d), NAN);
    rig.layer.forward(out.data(), x.data(), T);
    const auto& plan = rig.layer.plan();
    int64_t unserved = 0;
    for (int64_t t = 0; t < T; ++t) {
        const bool served = plan.token_offsets[t + 1] > plan.token_offsets[t];
        unserved += !served;
        double norm = 0;
        for (int64_t i = 0; i < d; ++i) norm += std::abs(out[size_t(t * d + i)]);
        if (served) {
            EXPECT_GT(norm, 0) << "token " << t;
        } else {
            EXPECT_EQ(norm, 0) << "token " << t;
        }
    }
    EXPECT_GE(unserved, 12);
    // And its gradient reaches x only through the router (the expert path gives none).
    std::vector<double> d_x(size_t(T * d), 0.0);
    const auto d_out = test::random_normal(size_t(T * d), 42);
    rig.layer.backward(d_out.data(), d_x.data());
    for (double v : d_x) EXPECT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace moe
