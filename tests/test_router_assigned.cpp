// assigned router: config validation; routing by the label in training and by the gate in
// evaluation, with weights p / q over the domain's experts; the assign loss and accuracy on
// a hand case; plan invariants over the size sweep (with and without capacity); every
// gradient (routed weights, assign loss, aux and z losses) by finite differences; the
// whole layer against the dense reference; and a training smoke test where the gate learns
// to predict the domain from x.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "moe/moe_layer.h"
#include "moe_reference.h"
#include "router_harness.h"

namespace moe {
namespace {

using sparse::MoeConfig;

// E experts in D = E / k domains of k consecutive experts, reversed within each domain so
// the list order differs from the expert order.
MoeConfig assigned_cfg(int64_t E, int64_t k, int64_t d) {
    MoeConfig c;
    c.router = "assigned";
    c.n_experts = E;
    c.top_k = k;
    c.d_model = d;
    c.d_expert = 5;
    c.aux_loss_coef = 0.2;
    c.z_loss_coef = 0.05;
    c.assigned.assign_loss_coef = 0.7;
    for (int64_t dom = 0; dom < E / k; ++dom) {
        std::vector<int64_t> list;
        for (int64_t j = k - 1; j >= 0; --j) list.push_back(dom * k + j);
        c.assigned.domain_experts.push_back(list);
    }
    return c;
}

template <class R>
void forward_labelled(test::RouterHarness<R>& h, const R* x, int64_t T, const int32_t* labels,
                      bool training) {
    h.in = sparse::RouterInput<R>{};
    h.in.x = x;
    h.in.T = T;
    h.in.labels = labels;
    h.in.training = training;
    h.router->forward(h.in, h.plan, h.losses);
}

std::vector<double> probs_of(const test::RouterHarness<double>& h, const std::vector<double>& x,
                             int64_t T) {
    const int64_t E = h.cfg.n_experts, d = h.cfg.d_model;
    std::vector<double> w(h.param("router.w"), h.param("router.w") + E * d);
    std::vector<double> b(h.param("router.b"), h.param("router.b") + E);
    auto l = sparse::reference::logits(x, w, b, T, d, E);
    for (int64_t t = 0; t < T; ++t) {
        double m = l[size_t(t * E)], s = 0;
        for (int64_t e = 0; e < E; ++e) m = std::max(m, l[size_t(t * E + e)]);
        for (int64_t e = 0; e < E; ++e) s += std::exp(l[size_t(t * E + e)] - m);
        for (int64_t e = 0; e < E; ++e)
            l[size_t(t * E + e)] = std::exp(l[size_t(t * E + e)] - m) / s;
    }
    return l;
}

// The dense gate of the assigned router, from scratch: route domain per token, weights p/q.
struct DenseAssigned {
    std::vector<double> gate;        // [T, E]
    std::vector<int64_t> route;      // [T]
    std::vector<int64_t> predicted;  // [T]
    double loss = 0, accuracy = -1;
};
DenseAssigned dense_assigned(const MoeConfig& c, const std::vector<double>& p, int64_t T,
                             const std::vector<int32_t>& labels, bool training) {
    const int64_t E = c.n_experts, D = int64_t(c.assigned.domain_experts.size());
    DenseAssigned r;
    r.gate.assign(size_t(T * E), 0.0);
    auto q = [&](int64_t t, int64_t dom) {
        double s = 0;
        for (int64_t e : c.assigned.domain_experts[size_t(dom)]) s += p[size_t(t * E + e)];
        return s;
    };
    int64_t n = 0, correct = 0;
    for (int64_t t = 0; t < T; ++t) {
        int64_t pred = 0;
        for (int64_t dom = 1; dom < D; ++dom)
            if (q(t, dom) > q(t, pred)) pred = dom;
        const int32_t label = labels.empty() ? -1 : labels[size_t(t)];
        if (label >= 0) {
            ++n;
            correct += pred == label;
            r.loss -= std::log(q(t, label));
        }
        const int64_t route = training && label >= 0 ? label : pred;
        r.route.push_back(route);
        r.predicted.push_back(pred);
        for (int64_t e : c.assigned.domain_experts[size_t(route)])
            r.gate[size_t(t * E + e)] = p[size_t(t * E + e)] / q(t, route);
    }
    if (n > 0) {
        r.loss /= double(n);
        r.accuracy = double(correct) / double(n);
    }
    return r;
}

TEST(Assigned, RejectsBadDomainLists) {
    auto expect_error = [](MoeConfig c, const std::string& part) {
        try {
            sparse::make_router<double>(c);
            ADD_FAILURE() << "accepted a bad config, expected: " << part;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
        }
    };
    MoeConfig c = assigned_cfg(4, 2, 3);
    c.assigned.domain_experts.clear();
    expect_error(c, "needs moe.domain_experts");
    c = assigned_cfg(4, 2, 3);
    c.assigned.domain_experts[1] = {2};
    expect_error(c, "moe.domain_experts[1] lists 1 experts but moe.top_k is 2");
    c = assigned_cfg(4, 2, 3);
    c.assigned.domain_experts[0] = {0, 4};
    expect_error(c, "moe.domain_experts[0][1] = 4 is not an expert");
    c = assigned_cfg(4, 2, 3);
    c.assigned.domain_experts[1] = {3, 3};
    expect_error(c, "lists expert 3 twice");
    // A label outside the domains is an error at forward.
    test::RouterHarness<double> h(assigned_cfg(4, 2, 3), 4);
    const auto x = test::random_normal(6, 1);
    const std::vector<int32_t> labels = {0, 2};
    try {
        forward_labelled(h, x.data(), 2, labels.data(), true);
        ADD_FAILURE() << "accepted label 2 with 2 domains";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("token 1 has domain label 2"), std::string::npos)
            << e.what();
    }
}

// Hand case: d = 2, experts 0, 1 see x[0] (logits 1.0 x0 and 0.5 x0), experts 2, 3 see
// x[1] (logits x1 and 0.5 x1); domain 0 = {0, 1}, domain 1 = {3, 2}.
TEST(Assigned, RoutesByLabelInTrainingAndByTheGateInEvaluation) {
    MoeConfig c;
    c.router = "assigned";
    c.n_experts = 4;
    c.top_k = 2;
    c.d_model = 2;
    c.aux_loss_coef = 0;
    c.z_loss_coef = 0;
    c.assigned.domain_experts = {{0, 1}, {3, 2}};
    test::RouterHarness<double> h(c, 8);
    const double w[] = {1, 0, 0.5, 0, 0, 1, 0, 0.5};
    std::copy(w, w + 8, h.param("router.w"));
    std::fill(h.param("router.b"), h.param("router.b") + 4, 0.0);
    const std::vector<double> x = {2, 0, 0, 2, 1, 0, 0, 1, 3, 0};
    const std::vector<int32_t> labels = {0, 1, 1, -1, 0};
    const int64_t T = 5;
    // q0(t) = (e^{a} + e^{a/2}) / (e^{a} + e^{a/2} + e^{b} + e^{b/2}) for x_t = (a, b).
    auto mass = [](double a, double b) {
        return (std::exp(a) + std::exp(a / 2)) /
               (std::exp(a) + std::exp(a / 2) + std::exp(b) + std::exp(b / 2));
    };
    const double q0[] = {mass(2, 0), mass(0, 2), mass(1, 0), mass(0, 1), mass(3, 0)};
    // Predictions: 0, 1, 0, 1, 0. Labelled tokens 0, 1, 2, 4: right, right, wrong, right.
    const double want_loss =
        -(std::log(q0[0]) + std::log(1 - q0[1]) + std::log(1 - q0[2]) + std::log(q0[4])) / 4;

    for (bool training : {true, false}) {
        SCOPED_TRACE(training ? "training" : "evaluation");
        forward_labelled(h, x.data(), T, labels.data(), training);
        EXPECT_DOUBLE_EQ(h.losses.assign_accuracy, 0.75);
        EXPECT_NEAR(h.losses.assign_loss, want_loss, 1e-15);
        EXPECT_NEAR(h.losses.weighted_total, c.assigned.assign_loss_coef * want_loss, 1e-15);
        // Token 2 (x = (1, 0), label 1, gate says 0): by label in training only.
        const auto g = h.dense_weights();
        const int64_t dom2 = training ? 1 : 0;
        for (int64_t e = 0; e < 4; ++e) EXPECT_EQ(g[size_t(2 * 4 + e)] > 0, e / 2 == dom2) << e;
        // Every other token goes where its label and the gate agree (or the gate alone).
        const int64_t dom[] = {0, 1, -1, 1, 0};
        for (int64_t t : {0, 1, 3, 4})
            for (int64_t e = 0; e < 4; ++e) EXPECT_EQ(g[size_t(t * 4 + e)] > 0, e / 2 == dom[t]);
        // Weights: softmax over the domain's logits, e.g. token 0: e^2 / (e^2 + e^1).
        EXPECT_NEAR(g[0], std::exp(2.0) / (std::exp(2.0) + std::exp(1.0)), 1e-15);
        EXPECT_NEAR(g[1], std::exp(1.0) / (std::exp(2.0) + std::exp(1.0)), 1e-15);
        EXPECT_NEAR(g[size_t(3 * 4 + 2)], std::exp(1.0) / (std::exp(1.0) + std::exp(0.5)), 1e-15);
    }
    // Without labels: no loss, accuracy -1, routing by the gate.
    forward_labelled(h, x.data(), T, static_cast<const int32_t*>(nullptr), true);
    EXPECT_EQ(h.losses.assign_accuracy, -1);
    EXPECT_EQ(h.losses.assign_loss, 0);
    EXPECT_GT(h.dense_weights()[size_t(2 * 4 + 0)], 0);
}

TEST(Assigned, PlanInvariantsOverTheSweep) {
    const int64_t d = 4;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(E, 2), E})
                for (double cf : {0.0, 1.0})
                    for (bool training : {true, false}) {
                        SCOPED_TRACE("T=" + std::to_string(T) + " E=" + std::to_string(E) +
                                     " k=" + std::to_string(k) + " cf=" + std::to_string(cf));
                        MoeConfig c = assigned_cfg(E, k, d);
                        c.capacity_factor = cf;
                        test::RouterHarness<double> h(c, 64);
                        h.randomize("router.w", 3 + uint64_t(E), 1.0);
                        const auto x = test::random_normal(size_t(T * d), 4 + uint64_t(T));
                        const int64_t D = E / k;
                        std::vector<int32_t> labels(static_cast<size_t>(T));
                        for (int64_t t = 0; t < T; ++t)
                            labels[size_t(t)] = int32_t(t % (D + 1)) - 1;
                        forward_labelled(h, x.data(), T, labels.data(), training);
                        const int64_t cap =
                            cf > 0 ? int64_t(std::ceil(cf * double(T * k) / double(E))) : -1;
                        EXPECT_TRUE(test::plan_invariants(h.plan, T * k, cap));
                        if (cf == 0) {
                            EXPECT_EQ(h.plan.dropped, 0);
                        }
                        const auto want = dense_assigned(c, probs_of(h, x, T), T, labels, training);
                        if (cf == 0) {
                            EXPECT_TRUE(
                                test::all_close(h.dense_weights(), want.gate, 1e-14, 1e-13));
                            // Weights of a token sum to 1.
                            for (int64_t t = 0; t < T; ++t) {
                                double s = 0;
                                for (int64_t e = 0; e < E; ++e) s += want.gate[size_t(t * E + e)];
                                EXPECT_NEAR(s, 1.0, 1e-14);
                            }
                        }
                        EXPECT_NEAR(h.losses.assign_loss, want.loss, 1e-13);
                        EXPECT_DOUBLE_EQ(h.losses.assign_accuracy, want.accuracy);
                    }
}

// Finite differences of sum_r u[t_r, e_r] w_r + weighted_total (routed weights, assign,
// aux and z losses) with the labels given, in training and evaluation.
void check_gradients(test::RouterHarness<double>& h, std::vector<double>& x, int64_t T,
                     const std::vector<int32_t>& labels, bool training) {
    const int64_t E = h.cfg.n_experts;
    const auto u = test::random_normal(size_t(T * E), 99);
    forward_labelled(h, x.data(), T, labels.data(), training);
    const auto base = h.assignment();
    int flips = 0;
    auto loss = [&] {
        forward_labelled(h, x.data(), T, labels.data(), training);
        if (h.assignment() != base) ++flips;
        return test::weighted_sum(h.dense_weights(), u) + h.losses.weighted_total;
    };
    forward_labelled(h, x.data(), T, labels.data(), training);
    h.grads.zero();
    std::vector<double> d_row(size_t(h.plan.rows())), d_x(x.size(), 0.0);
    for (int64_t r = 0; r < h.plan.rows(); ++r)
        d_row[size_t(r)] = u[size_t(h.plan.row_token[r] * E + h.expert_of_row(r))];
    h.router->backward(h.in, h.plan, d_row.data(), d_x.data());
    const std::vector<double> dw(h.grad("router.w"), h.grad("router.w") + h.numel("router.w"));
    const std::vector<double> db(h.grad("router.b"), h.grad("router.b") + h.numel("router.b"));
    EXPECT_TRUE(test::all_close(d_x, test::numeric_gradient(loss, x.data(), x.size()), 1e-8, 1e-6))
        << "d_x";
    EXPECT_TRUE(test::all_close(dw, test::numeric_gradient(loss, h.param("router.w"), dw.size()),
                                1e-8, 1e-6))
        << "router.w";
    EXPECT_TRUE(test::all_close(db, test::numeric_gradient(loss, h.param("router.b"), db.size()),
                                1e-8, 1e-6))
        << "router.b";
    EXPECT_EQ(flips, 0) << "a routing choice changed under a finite-difference step";
}

TEST(Assigned, GradientsMatchFiniteDifferences) {
    const int64_t d = 4;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (bool training : {true, false}) {
                if (T * E > 64 * 8) continue;  // the layer test covers T = E = 64
                const int64_t k = std::min<int64_t>(E, 2);
                SCOPED_TRACE("T=" + std::to_string(T) + " E=" + std::to_string(E) +
                             (training ? " training" : " evaluation"));
                MoeConfig c = assigned_cfg(E, k, d);
                test::RouterHarness<double> h(c, 64);
                h.randomize("router.w", 5 + uint64_t(E), 1.5);
                h.randomize("router.b", 6, 0.5);
                auto x = test::random_normal(size_t(T * d), 7 + uint64_t(T));
                std::vector<int32_t> labels(static_cast<size_t>(T));
                const int64_t D = E / k;
                for (int64_t t = 0; t < T; ++t) labels[size_t(t)] = int32_t((t * 5) % (D + 1)) - 1;
                check_gradients(h, x, T, labels, training);
            }
}

TEST(Assigned, FloatPathMatchesDouble) {
    const int64_t T = 64, E = 8, k = 2, d = 6;
    const MoeConfig c = assigned_cfg(E, k, d);
    test::RouterHarness<double> hd(c, T);
    test::RouterHarness<float> hf(c, T);
    hd.randomize("router.w", 50, 1.0);
    hd.randomize("router.b", 51, 0.5);
    for (const char* n : {"router.w", "router.b"})
        for (int64_t i = 0; i < hd.numel(n); ++i) hf.param(n)[i] = float(hd.param(n)[i]);
    const auto xf = test::random_normal_f32(size_t(T * d), 52);
    const auto xd = test::to_f64(xf);
    std::vector<int32_t> labels(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) labels[size_t(t)] = int32_t(t % 5) - 1;
    forward_labelled(hd, xd.data(), T, labels.data(), true);
    forward_labelled(hf, xf.data(), T, labels.data(), true);
    EXPECT_EQ(hf.assignment(), hd.assignment());
    EXPECT_TRUE(test::all_close(hf.dense_weights(), hd.dense_weights(), 1e-6, 1e-5));
    EXPECT_NEAR(hf.losses.weighted_total, hd.losses.weighted_total, 1e-5);
    EXPECT_EQ(hf.losses.assign_accuracy, hd.losses.assign_accuracy);
    const auto u = test::random_normal(size_t(hd.plan.rows()), 53);
    std::vector<double> dxd(size_t(T * d), 0.0);
    std::vector<float> dxf(size_t(T * d), 0.0f);
    hd.router->backward(hd.in, hd.plan, u.data(), dxd.data());
    const auto uf = test::to_f32(u);
    hf.router->backward(hf.in, hf.plan, uf.data(), dxf.data());
    EXPECT_TRUE(test::all_close(test::to_f64(dxf), dxd, 1e-5, 1e-4));
    const std::vector<float> gwf(hf.grad("router.w"), hf.grad("router.w") + E * d);
    const std::vector<double> gwd(hd.grad("router.w"), hd.grad("router.w") + E * d);
    EXPECT_TRUE(test::all_close(test::to_f64(gwf), gwd, 1e-5, 1e-4));
}

// ---- the whole layer against the dense reference ----

TEST(AssignedLayer, MatchesTheDenseReferenceOnOutputsAndEveryGradient) {
    const int64_t d = 6;
    const std::string prefix = "layers.2.moe.";
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (bool training : {true, false}) {
                const int64_t k = std::min<int64_t>(E, 2);
                SCOPED_TRACE("T=" + std::to_string(T) + " E=" + std::to_string(E) +
                             (training ? " training" : " evaluation"));
                MoeConfig c = assigned_cfg(E, k, d);
                c.n_shared = 1;  // the shared path rides along
                c.d_shared = 3;
                sparse::MoeLayer<double> layer(c, 64);
                Arena params;
                layer.declare(params, prefix);
                params.allocate();
                Arena grads = params.clone_layout();
                layer.bind(params, grads);
                Rng rng(9);
                layer.init_weights(rng, 0.4, 0.4);
                auto put = [&](const std::string& n, uint64_t seed, double scale) {
                    Tensor t = params.get(prefix + n);
                    const auto v = test::random_normal(size_t(t.numel()), seed, scale);
                    std::copy(v.begin(), v.end(), t.ptr<double>());
                };
                put("router.w", 10, 1.5);
                put("router.b", 11, 0.5);
                const auto x = test::random_normal(size_t(T * d), 12 + uint64_t(T));
                const auto d_out = test::random_normal(size_t(T * d), 13);
                std::vector<int32_t> labels(static_cast<size_t>(T));
                const int64_t D = E / k;
                for (int64_t t = 0; t < T; ++t) labels[size_t(t)] = int32_t((t * 3) % (D + 1)) - 1;
                sparse::RouterInput<double> extras;
                extras.labels = labels.data();
                extras.training = training;
                std::vector<double> out(size_t(T * d), NAN);
                const double loss = layer.forward(out.data(), x.data(), T, extras);

                const auto w = sparse::reference::tensor_as_f64(params, prefix + "router.w");
                const auto b = sparse::reference::tensor_as_f64(params, prefix + "router.b");
                const auto l = sparse::reference::logits(x, w, b, T, d, E);
                std::vector<double> p(l.size()), lse(static_cast<size_t>(T));
                double z = 0;
                for (int64_t t = 0; t < T; ++t) {
                    double m = l[size_t(t * E)], s = 0;
                    for (int64_t e = 0; e < E; ++e) m = std::max(m, l[size_t(t * E + e)]);
                    for (int64_t e = 0; e < E; ++e) s += std::exp(l[size_t(t * E + e)] - m);
                    lse[size_t(t)] = m + std::log(s);
                    z += lse[size_t(t)] * lse[size_t(t)] / double(T);
                    for (int64_t e = 0; e < E; ++e)
                        p[size_t(t * E + e)] = std::exp(l[size_t(t * E + e)] - lse[size_t(t)]);
                }
                const auto want = dense_assigned(c, p, T, labels, training);
                // aux = E sum_e f_e P_e, f_e = routed tokens of e / (T k), P_e = mean_t p.
                std::vector<double> f(static_cast<size_t>(E), 0.0), P(static_cast<size_t>(E), 0.0);
                for (int64_t t = 0; t < T; ++t)
                    for (int64_t e = 0; e < E; ++e) {
                        f[size_t(e)] += (want.gate[size_t(t * E + e)] > 0) / double(T * k);
                        P[size_t(e)] += p[size_t(t * E + e)] / double(T);
                    }
                double aux = 0;
                for (int64_t e = 0; e < E; ++e) aux += double(E) * f[size_t(e)] * P[size_t(e)];
                EXPECT_NEAR(loss,
                            c.assigned.assign_loss_coef * want.loss + c.aux_loss_coef * aux +
                                c.z_loss_coef * z,
                            1e-12);
                const auto model = sparse::reference::model_from(params, prefix, c);
                EXPECT_TRUE(test::all_close(out, sparse::reference::forward(model, x, T, want.gate),
                                            1e-12, 1e-10));

                grads.zero();
                std::vector<double> d_x(size_t(T * d), 0.0);
                layer.backward(d_out.data(), d_x.data());
                const auto ref = sparse::reference::backward(model, x, T, want.gate, d_out);
                // Gate gradient by the chain rule through p, written densely.
                int64_t n_lab = 0;
                for (int32_t v : labels) n_lab += v >= 0;
                std::vector<double> dp(size_t(T * E), 0.0);
                for (int64_t t = 0; t < T; ++t) {
                    const auto& dom = c.assigned.domain_experts[size_t(want.route[size_t(t)])];
                    double q = 0, c0 = 0;
                    for (int64_t e : dom) q += p[size_t(t * E + e)];
                    for (int64_t e : dom)
                        c0 += want.gate[size_t(t * E + e)] * ref.d_gate[size_t(t * E + e)];
                    for (int64_t e : dom)
                        dp[size_t(t * E + e)] += (ref.d_gate[size_t(t * E + e)] - c0) / q;
                    if (labels[size_t(t)] >= 0) {
                        const auto& ld = c.assigned.domain_experts[size_t(labels[size_t(t)])];
                        double ql = 0;
                        for (int64_t e : ld) ql += p[size_t(t * E + e)];
                        for (int64_t e : ld)
                            dp[size_t(t * E + e)] -=
                                c.assigned.assign_loss_coef / (double(n_lab) * ql);
                    }
                    for (int64_t e = 0; e < E; ++e)
                        dp[size_t(t * E + e)] +=
                            c.aux_loss_coef * double(E) * f[size_t(e)] / double(T);
                }
                auto dx_ref = ref.d_x;
                std::vector<double> dw(size_t(E * d), 0.0), db(size_t(E), 0.0);
                for (int64_t t = 0; t < T; ++t) {
                    double dot = 0;
                    for (int64_t e = 0; e < E; ++e)
                        dot += dp[size_t(t * E + e)] * p[size_t(t * E + e)];
                    for (int64_t e = 0; e < E; ++e) {
                        const double pe = p[size_t(t * E + e)];
                        const double g = pe * (dp[size_t(t * E + e)] - dot) +
                                         c.z_loss_coef * 2 * lse[size_t(t)] * pe / double(T);
                        db[size_t(e)] += g;
                        for (int64_t i = 0; i < d; ++i) {
                            dx_ref[size_t(t * d + i)] += g * w[size_t(e * d + i)];
                            dw[size_t(e * d + i)] += g * x[size_t(t * d + i)];
                        }
                    }
                }
                auto grad = [&](const std::string& n) {
                    return sparse::reference::tensor_as_f64(grads, prefix + n);
                };
                EXPECT_TRUE(test::all_close(d_x, dx_ref, 1e-11, 1e-9)) << "d_x";
                EXPECT_TRUE(test::all_close(grad("router.w"), dw, 1e-11, 1e-9)) << "router.w";
                EXPECT_TRUE(test::all_close(grad("router.b"), db, 1e-11, 1e-9)) << "router.b";
                EXPECT_TRUE(test::all_close(grad("experts.w1"), ref.d_w1, 1e-11, 1e-9));
                EXPECT_TRUE(test::all_close(grad("experts.w3"), ref.d_w3, 1e-11, 1e-9));
                EXPECT_TRUE(test::all_close(grad("experts.w2"), ref.d_w2, 1e-11, 1e-9));
                EXPECT_TRUE(test::all_close(grad("shared.w1"), ref.d_sw1, 1e-11, 1e-9));
                EXPECT_TRUE(test::all_close(grad("shared.w2"), ref.d_sw2, 1e-11, 1e-9));
            }
}

// ---- training: the gate learns the domain from x ----

TEST(AssignedTraining, GateLearnsToPredictTheDomain) {
    // 4 domains, each a Gaussian cluster in d = 8 (centres N(0, 1), spread 0.5); experts
    // {0,1}, {2,3}, ... Only the gate is trained, on the assign loss alone, with plain SGD.
    // In double: the float path's threads cost more than these tiny steps on a busy machine
    // (3 s against 50 ms); FloatPathMatchesDouble covers the float router.
    const int64_t d = 8, E = 8, k = 2, D = 4, T = 64;
    MoeConfig c = assigned_cfg(E, k, d);
    c.aux_loss_coef = 0;
    c.z_loss_coef = 0;
    c.assigned.assign_loss_coef = 1;
    test::RouterHarness<double> h(c, T);
    const auto centres = test::random_normal(size_t(D * d), 100);
    Rng rng(101);
    auto batch = [&](std::vector<double>& x, std::vector<int32_t>& labels) {
        for (int64_t t = 0; t < T; ++t) {
            const int32_t dom = int32_t(rng.below(uint64_t(D)));
            labels[size_t(t)] = dom;
            for (int64_t i = 0; i < d; ++i)
                x[size_t(t * d + i)] = centres[size_t(dom * d + i)] + 0.5 * double(rng.normal());
        }
    };
    std::vector<double> x(size_t(T * d));
    std::vector<int32_t> labels(static_cast<size_t>(T));
    batch(x, labels);
    forward_labelled(h, x.data(), T, labels.data(), false);
    const double acc0 = h.losses.assign_accuracy, loss0 = h.losses.assign_loss;

    const double lr = 0.5;
    for (int step = 0; step < 300; ++step) {
        batch(x, labels);
        forward_labelled(h, x.data(), T, labels.data(), true);
        h.grads.zero();
        std::vector<double> d_row(size_t(h.plan.rows()), 0.0), d_x(x.size(), 0.0);
        h.router->backward(h.in, h.plan, d_row.data(), d_x.data());
        for (const char* n : {"router.w", "router.b"})
            for (int64_t i = 0; i < h.numel(n); ++i) h.param(n)[i] -= lr * h.grad(n)[i];
    }
    // Fresh data, evaluation mode: the gate alone routes, and predicts the label.
    double acc = 0, loss = 0;
    for (int rep = 0; rep < 4; ++rep) {
        batch(x, labels);
        forward_labelled(h, x.data(), T, labels.data(), false);
        acc += h.losses.assign_accuracy / 4;
        loss += h.losses.assign_loss / 4;
        // Evaluation routes by the prediction: each token to its predicted domain's experts.
        int64_t routed_as_label = 0;
        const auto g = h.dense_weights();
        for (int64_t t = 0; t < T; ++t)
            routed_as_label += g[size_t(t * E + labels[size_t(t)] * k)] > 0;
        EXPECT_NEAR(double(routed_as_label) / double(T), h.losses.assign_accuracy, 1e-12);
    }
    EXPECT_GT(acc, 0.9) << "accuracy before training " << acc0;
    EXPECT_LT(loss, 0.5 * loss0);
}

}  // namespace
}  // namespace moe
