// A router on its own, for the router tests (tests/test_router_*.cpp): arenas, plan
// buffers, the plan invariants every router must keep, and a finite-difference check of
// the router's backward with a loss that sees every routing weight and every balancing loss.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/arena.h"
#include "core/rng.h"
#include "core/threads.h"
#include "moe/moe_config.h"
#include "moe/moe_layer.h"
#include "moe_reference.h"
#include "moe/router.h"
#include "moe/routing_plan.h"
#include "test_support.h"

namespace moe::test {

template <class R>
struct RouterHarness {
    sparse::MoeConfig cfg;
    int64_t max_tokens;
    std::unique_ptr<sparse::Router<R>> router;
    Arena params, grads, acts;
    std::vector<int64_t> offsets, token_offsets;
    std::vector<int32_t> row_token, row_choice, token_rows;
    std::vector<R> row_weight;
    sparse::RoutingPlan<R> plan;
    sparse::RouterLosses losses;
    sparse::RouterInput<R> in;
    const std::string prefix = "layers.0.moe.";

    RouterHarness(const sparse::MoeConfig& c, int64_t max_t, uint64_t seed = 1)
        : cfg(c), max_tokens(max_t) {
        router = sparse::make_router<R>(cfg);
        router->declare(params, acts, prefix, max_tokens);
        params.allocate();
        grads = params.clone_layout();
        acts.allocate();
        router->bind(params, grads, acts);
        Rng rng(seed);
        router->init_weights(rng);
        const int64_t rows = router->max_rows(max_tokens);
        offsets.resize(size_t(cfg.n_experts + 1));
        token_offsets.resize(size_t(max_tokens + 1));
        row_token.resize(size_t(rows));
        row_choice.resize(size_t(rows));
        token_rows.resize(size_t(rows));
        row_weight.resize(size_t(rows));
        plan.max_rows = rows;
        plan.offsets = offsets.data();
        plan.row_token = row_token.data();
        plan.row_choice = row_choice.data();
        plan.row_weight = row_weight.data();
        plan.token_offsets = token_offsets.data();
        plan.token_rows = token_rows.data();
    }

    bool has(const std::string& name) const { return params.find(prefix + name) >= 0; }
    R* param(const std::string& name) const { return params.get(prefix + name).template ptr<R>(); }
    R* grad(const std::string& name) const { return grads.get(prefix + name).template ptr<R>(); }
    int64_t numel(const std::string& name) const { return params.get(prefix + name).numel(); }

    // Fills a parameter with normal(0, scale) values (well separated logits need scale ~ 1,
    // not the 0.02 of init_weights).
    void randomize(const std::string& name, uint64_t seed, double scale) {
        auto v = random_normal(size_t(numel(name)), seed, scale);
        std::copy(v.begin(), v.end(), param(name));
    }

    void forward(const R* x, int64_t T, bool training = false, uint64_t seed = 0,
                 const int32_t* token_ids = nullptr) {
        in = sparse::RouterInput<R>{};
        in.x = x;
        in.T = T;
        in.training = training;
        in.seed = seed;
        in.token_ids = token_ids;
        router->forward(in, plan, losses);
    }

    int32_t expert_of_row(int64_t r) const {
        for (int64_t e = 0; e < plan.E; ++e)
            if (r < plan.offsets[e + 1]) return int32_t(e);
        return -1;
    }
    // (token, expert) of every row, sorted: what a choice flip would change.
    std::vector<std::pair<int32_t, int32_t>> assignment() const {
        std::vector<std::pair<int32_t, int32_t>> a;
        for (int64_t r = 0; r < plan.rows(); ++r)
            a.emplace_back(plan.row_token[r], expert_of_row(r));
        std::sort(a.begin(), a.end());
        return a;
    }
    // Combine weights as a dense [T, E] matrix (0 where a token has no row).
    std::vector<double> dense_weights() const {
        std::vector<double> w(size_t(plan.T * plan.E), 0.0);
        for (int64_t r = 0; r < plan.rows(); ++r)
            w[size_t(plan.row_token[r] * plan.E + expert_of_row(r))] += double(plan.row_weight[r]);
        return w;
    }
};

// The structural invariants of any plan: offsets ascend, row_token ascends within each
// expert, every row has a valid token and choice, the token index lists each token's rows
// in ascending order, no expert is over `capacity` (< 0: dropless), and the rows plus the
// drops make `choices` (T*k for token choice).
template <class R>
::testing::AssertionResult plan_invariants(const sparse::RoutingPlan<R>& p, int64_t choices,
                                           int64_t capacity) {
    if (p.offsets[0] != 0) return ::testing::AssertionFailure() << "offsets[0] != 0";
    for (int64_t e = 0; e < p.E; ++e) {
        if (p.count(e) < 0) return ::testing::AssertionFailure() << "expert " << e << " count < 0";
        if (capacity >= 0 && p.count(e) > capacity)
            return ::testing::AssertionFailure()
                   << "expert " << e << " has " << p.count(e) << " rows, capacity " << capacity;
        for (int64_t r = p.offsets[e] + 1; r < p.offsets[e + 1]; ++r)
            if (p.row_token[r] <= p.row_token[r - 1])
                return ::testing::AssertionFailure()
                       << "expert " << e << ": row_token not ascending at row " << r;
    }
    if (p.rows() + p.dropped != choices)
        return ::testing::AssertionFailure()
               << p.rows() << " rows + " << p.dropped << " dropped != " << choices << " choices";
    for (int64_t r = 0; r < p.rows(); ++r)
        if (p.row_token[r] < 0 || p.row_token[r] >= p.T || p.row_choice[r] < 0 ||
            p.row_choice[r] >= choices)
            return ::testing::AssertionFailure() << "row " << r << " has a bad token or choice";
    if (p.token_offsets[0] != 0 || p.token_offsets[p.T] != p.rows())
        return ::testing::AssertionFailure() << "token_offsets do not span the rows";
    for (int64_t t = 0; t < p.T; ++t)
        for (int64_t i = p.token_offsets[t]; i < p.token_offsets[t + 1]; ++i) {
            const int32_t r = p.token_rows[i];
            if (p.row_token[r] != t || (i > p.token_offsets[t] && r <= p.token_rows[i - 1]))
                return ::testing::AssertionFailure() << "token index wrong at token " << t;
        }
    return ::testing::AssertionSuccess();
}

// Finite differences of L = sum_r u[token_r, expert_r] * row_weight_r + losses.weighted_total
// with respect to x and the named parameters, against the router's backward. The routing
// choices must not change under the perturbations (the caller makes the logits well
// separated); the check fails if any does.
inline void check_router_gradients(RouterHarness<double>& h, std::vector<double>& x, int64_t T,
                                   const std::vector<std::string>& names, bool training,
                                   uint64_t seed, double atol = 1e-7, double rtol = 1e-6) {
    const int64_t E = h.cfg.n_experts;
    const auto u = random_normal(size_t(T * E), 99);
    h.forward(x.data(), T, training, seed);
    const auto base = h.assignment();
    int flips = 0;
    auto loss = [&] {
        h.forward(x.data(), T, training, seed);
        if (h.assignment() != base) ++flips;
        const auto w = h.dense_weights();
        return weighted_sum(w, u) + h.losses.weighted_total;
    };
    // Analytic: one forward at the base point, then backward.
    h.forward(x.data(), T, training, seed);
    h.grads.zero();
    std::vector<double> d_row(size_t(h.plan.rows())), d_x(x.size(), 0.0);
    for (int64_t r = 0; r < h.plan.rows(); ++r)
        d_row[size_t(r)] = u[size_t(h.plan.row_token[r] * E + h.expert_of_row(r))];
    h.router->backward(h.in, h.plan, d_row.data(), d_x.data());
    std::vector<std::vector<double>> analytic;
    for (const auto& n : names) analytic.emplace_back(h.grad(n), h.grad(n) + h.numel(n));

    EXPECT_TRUE(all_close(d_x, numeric_gradient(loss, x.data(), x.size()), atol, rtol)) << "d_x";
    for (size_t i = 0; i < names.size(); ++i)
        EXPECT_TRUE(all_close(analytic[i],
                              numeric_gradient(loss, h.param(names[i]), size_t(h.numel(names[i]))),
                              atol, rtol))
            << names[i];
    EXPECT_EQ(flips, 0) << "a routing choice changed under a finite-difference step";
}

// Routers run their per-token loops on OpenMP threads from 16k gate entries, which the
// small sizes above never reach: at T*E >= 32k, forward and backward must give the same
// plan, losses and gradients, to the bit, with 1 and 2 threads (double: the gate's GEMM is
// then the single-threaded reference, so only the router's own loops can differ).
inline void check_same_for_any_thread_count(const sparse::MoeConfig& cfg, int64_t T, bool training,
                                            const std::vector<std::string>& names) {
    struct Result {
        std::vector<std::pair<int32_t, int32_t>> assignment;
        std::vector<double> weights, d_x;
        std::vector<std::vector<double>> grads;
        double loss;
    };
    const auto x = random_normal(size_t(T * cfg.d_model), 77);
    const auto u = random_normal(size_t(T * cfg.n_experts), 78);
    auto run = [&](int threads) {
        set_num_threads(threads);
        RouterHarness<double> h(cfg, T);
        for (size_t i = 0; i < names.size(); ++i) h.randomize(names[i], 80 + i, 1.0);
        h.forward(x.data(), T, training, 5);
        EXPECT_TRUE(plan_invariants(h.plan, h.plan.rows() + h.plan.dropped, -1));
        Result r{h.assignment(),
                 h.dense_weights(),
                 std::vector<double>(x.size(), 0.0),
                 {},
                 h.losses.weighted_total};
        std::vector<double> d_row(size_t(h.plan.rows()));
        for (int64_t i = 0; i < h.plan.rows(); ++i)
            d_row[size_t(i)] = u[size_t(h.plan.row_token[i] * cfg.n_experts + h.expert_of_row(i))];
        h.grads.zero();
        h.router->backward(h.in, h.plan, d_row.data(), r.d_x.data());
        for (const auto& n : names) r.grads.emplace_back(h.grad(n), h.grad(n) + h.numel(n));
        return r;
    };
    const int before = num_threads();
    const Result one = run(1), two = run(2);
    set_num_threads(before);
    EXPECT_EQ(one.assignment, two.assignment);
    EXPECT_EQ(one.weights, two.weights);
    EXPECT_EQ(one.loss, two.loss);
    EXPECT_EQ(one.d_x, two.d_x);
    for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(one.grads[i], two.grads[i]) << names[i];
}

// The whole layer (src/moe/moe_layer.h) against the dense reference (tests/support/moe_reference.h):
//  - outputs: the layer's out equals the reference's sum_e G[t, e] expert_e(x[t]) with G
//    the dense gate of the layer's own plan;
//  - expert gradients: equal the reference's;
//  - router gradients: the layer's d_x and router parameter gradients equal the reference's
//    d_x plus what a standalone router (same parameters, same input) gives for
//    d_row_weight = the reference's d_gate at each row, and the layer's returned loss is the
//    router's weighted loss;
//  - with `fd`, every gradient of L = sum(out * d_out) + loss with respect to x and the
//    router's parameters also by finite differences through the whole layer.
// `set_router` fills the router's parameters (well separated logits); `ids` may be null.
inline void check_layer_against_reference(
    const sparse::MoeConfig& cfg, int64_t T, bool training, uint64_t seed, const int32_t* ids,
    const std::function<void(Arena&, const std::string&)>& set_router, bool fd) {
    const std::string prefix = "layers.1.moe.";
    const int64_t d = cfg.d_model, E = cfg.n_experts;
    sparse::MoeLayer<double> layer(cfg, T);
    Arena params;
    layer.declare(params, prefix);
    params.allocate();
    Arena grads = params.clone_layout();
    layer.bind(params, grads);
    Rng rng(17);
    layer.init_weights(rng, 0.5);
    set_router(params, prefix);
    sparse::RouterInput<double> extras;
    extras.training = training;
    extras.seed = seed;
    extras.token_ids = ids;
    auto x = random_normal(size_t(T * d), 41);
    const auto d_out = random_normal(size_t(T * d), 42);
    std::vector<double> out(x.size());
    const double loss = layer.forward(out.data(), x.data(), T, extras);

    const auto model = sparse::reference::model_from(params, prefix, cfg);
    const auto gate = sparse::reference::dense_gate(layer.plan());
    EXPECT_TRUE(all_close(out, sparse::reference::forward(model, x, T, gate), 1e-12, 1e-10))
        << "out";
    grads.zero();
    std::vector<double> d_x(x.size(), 0.0);
    layer.backward(d_out.data(), d_x.data());
    const auto ref = sparse::reference::backward(model, x, T, gate, d_out);
    auto grad_of = [&](const std::string& n) {
        return sparse::reference::tensor_as_f64(grads, prefix + n);
    };
    EXPECT_TRUE(all_close(grad_of("experts.w1"), ref.d_w1, 1e-12, 1e-10)) << "experts.w1";
    if (cfg.expert == sparse::ExpertKind::swiglu) {
        EXPECT_TRUE(all_close(grad_of("experts.w3"), ref.d_w3, 1e-12, 1e-10)) << "experts.w3";
    }
    EXPECT_TRUE(all_close(grad_of("experts.w2"), ref.d_w2, 1e-12, 1e-10)) << "experts.w2";

    // The router's share, from a standalone router fed the reference's d_gate.
    RouterHarness<double> h(cfg, T);
    std::vector<std::string> router_params;
    for (const auto& e : params.entries())
        if (e.name.rfind(prefix + "router.", 0) == 0) {
            const std::string n = e.name.substr(prefix.size());
            router_params.push_back(n);
            const auto v = sparse::reference::tensor_as_f64(params, e.name);
            std::copy(v.begin(), v.end(), h.param(n));
        }
    h.forward(x.data(), T, training, seed, ids);
    EXPECT_EQ(sparse::reference::dense_gate(h.plan), gate) << "standalone router plan differs";
    EXPECT_DOUBLE_EQ(loss, h.losses.weighted_total);
    std::vector<double> d_row(size_t(h.plan.rows())), d_x_router = ref.d_x;
    for (int64_t r = 0; r < h.plan.rows(); ++r)
        d_row[size_t(r)] = ref.d_gate[size_t(h.plan.row_token[r] * E + h.expert_of_row(r))];
    h.grads.zero();
    h.router->backward(h.in, h.plan, d_row.data(), d_x_router.data());
    EXPECT_TRUE(all_close(d_x, d_x_router, 1e-12, 1e-10)) << "d_x";
    for (const auto& n : router_params)
        EXPECT_TRUE(all_close(grad_of(n), std::vector<double>(h.grad(n), h.grad(n) + h.numel(n)),
                              1e-12, 1e-10))
            << n;
    if (!fd) return;

    // Finite differences through the whole layer.
    std::vector<double> d_params;
    auto L = [&] {
        const double l = layer.forward(out.data(), x.data(), T, extras);
        return weighted_sum(out, d_out) + l;
    };
    EXPECT_TRUE(all_close(d_x, numeric_gradient(L, x.data(), x.size()), 1e-7, 1e-6)) << "fd d_x";
    for (const auto& n : router_params) {
        const Tensor t = params.get(prefix + n);
        EXPECT_TRUE(all_close(grad_of(n), numeric_gradient(L, t.ptr<double>(), size_t(t.numel())),
                              1e-7, 1e-6))
            << "fd " << n;
    }
}

}  // namespace moe::test
