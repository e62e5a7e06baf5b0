// The softmax_topk router on its own: the plan's invariants (top-k of the logits, ties to
// the lower expert, renormalised weights summing to 1, unrenormalised weights equal to the
// probabilities, top-k-then-softmax equal to renormalising, capacity by probability and by
// position), the losses and the backward against the dense reference over awkward
// shapes, the backward by central finite differences in double (with capacity drops, every
// loss and jitter on), jitter only in training and reproducible by seed, and the float
// router against double.
#include <cmath>
#include <limits>
#include <memory>

#include "moe/router.h"
#include "moe_reference.h"
#include "test_support.h"

namespace moe::sparse {
namespace {

namespace ref = reference;

// A router with its own arenas and plan storage.
template <class R>
struct Rig {
    MoeConfig cfg;
    Arena params, grads, acts;
    std::unique_ptr<Router<R>> router;
    std::vector<int64_t> offsets, token_offsets;
    std::vector<int32_t> row_token, row_choice, token_rows;
    std::vector<R> row_weight;
    RoutingPlan<R> plan;
    RouterLosses losses;

    Rig(const MoeConfig& c, int64_t max_T, uint64_t seed = 1, double w_scale = 1.0) : cfg(c) {
        router = make_router<R>(cfg);
        router->declare(params, acts, "moe.", max_T);
        params.allocate();
        grads = params.clone_layout();
        acts.allocate();
        router->bind(params, grads, acts);
        Rng rng(seed);
        router->init_weights(rng);
        const int64_t E = cfg.n_experts, d = cfg.d_model;
        set("router.w",
            test::random_normal(size_t(E * d), seed + 10, w_scale / std::sqrt(double(d))));
        set("router.b", test::random_normal(size_t(E), seed + 20, 0.3));
        const int64_t rows = router->max_rows(max_T);
        offsets.resize(size_t(E + 1));
        token_offsets.resize(size_t(max_T + 1));
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
    void set(const std::string& n, const std::vector<double>& v) {
        const Tensor t = params.get("moe." + n);
        for (size_t i = 0; i < v.size(); ++i) t.ptr<R>()[i] = R(v[i]);
    }
    std::vector<double> get(const std::string& n) const {
        return ref::tensor_as_f64(params, "moe." + n);
    }
    std::vector<double> grad(const std::string& n) const {
        return ref::tensor_as_f64(grads, "moe." + n);
    }
    RouterInput<R> input(const std::vector<R>& x, int64_t T, bool training = false,
                         uint64_t seed = 0) const {
        RouterInput<R> in;
        in.x = x.data();
        in.T = T;
        in.training = training;
        in.seed = seed;
        return in;
    }
    double forward(const RouterInput<R>& in) {
        router->forward(in, plan, losses);
        return losses.weighted_total;
    }
    // Per token, the (expert, weight) pairs of its rows.
    std::vector<std::vector<std::pair<int64_t, double>>> rows_by_token() const {
        std::vector<std::vector<std::pair<int64_t, double>>> out(size_t(plan.T));
        for (int64_t e = 0; e < plan.E; ++e)
            for (int64_t r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r)
                out[size_t(plan.row_token[r])].push_back({e, double(plan.row_weight[r])});
        return out;
    }
};

MoeConfig config(int64_t E, int64_t k, int64_t d = 5) {
    MoeConfig c;
    c.d_model = d;
    c.n_experts = E;
    c.top_k = k;
    c.aux_loss_coef = 0.1;
    c.z_loss_coef = 0.03;
    c.importance_coef = 0.07;
    return c;
}

TEST(SoftmaxTopk, PicksTheLargestLogitsAndWeightsByProbability) {
    const int64_t T = 64, E = 8, k = 3, d = 5;
    for (int variant = 0; variant < 3; ++variant) {
        MoeConfig c = config(E, k);
        c.softmax_topk.renormalize = variant == 0;
        c.softmax_topk.softmax_after_topk = variant == 2;
        Rig<double> rig(c, T);
        const auto x = test::random_normal(size_t(T * d), 2);
        rig.forward(rig.input(x, T));
        EXPECT_EQ(rig.plan.rows(), T * k);
        EXPECT_EQ(rig.plan.dropped, 0);
        const auto lg = ref::logits(x, rig.get("router.w"), rig.get("router.b"), T, d, E);
        const auto rows = rig.rows_by_token();
        for (int64_t t = 0; t < T; ++t) {
            ASSERT_EQ(rows[size_t(t)].size(), size_t(k));
            const double* l = lg.data() + t * E;
            double lmin_kept = 1e300, lmax_other = -1e300, wsum = 0, psum = 0, z = 0;
            for (int64_t e = 0; e < E; ++e) z += std::exp(l[e]);
            std::vector<bool> kept(size_t(E), false);
            for (const auto& [e, w] : rows[size_t(t)]) {
                kept[size_t(e)] = true;
                lmin_kept = std::min(lmin_kept, l[e]);
                wsum += w;
                psum += std::exp(l[e]) / z;
                if (variant == 1) {
                    EXPECT_NEAR(w, std::exp(l[e]) / z, 1e-14) << "weight = probability";
                }
            }
            for (int64_t e = 0; e < E; ++e)
                if (!kept[size_t(e)]) lmax_other = std::max(lmax_other, l[e]);
            EXPECT_GT(lmin_kept, lmax_other) << "token " << t << " did not keep its top " << k;
            if (variant != 1) {
                EXPECT_NEAR(wsum, 1.0, 1e-14) << "renormalised weights sum to 1";
            } else {
                EXPECT_NEAR(wsum, psum, 1e-14);
            }
        }
    }
}

TEST(SoftmaxTopk, TopkThenSoftmaxEqualsRenormalising) {
    const int64_t T = 33, E = 16, k = 4, d = 5;
    MoeConfig a = config(E, k), b = config(E, k);
    a.softmax_topk.renormalize = true;
    b.softmax_topk.renormalize = false;
    b.softmax_topk.softmax_after_topk = true;
    Rig<double> ra(a, T), rb(b, T);
    const auto x = test::random_normal(size_t(T * d), 3);
    ra.forward(ra.input(x, T));
    rb.forward(rb.input(x, T));
    ASSERT_EQ(ra.plan.rows(), rb.plan.rows());
    for (int64_t r = 0; r < ra.plan.rows(); ++r) {
        EXPECT_EQ(ra.plan.row_choice[r], rb.plan.row_choice[r]);
        EXPECT_NEAR(ra.plan.row_weight[r], rb.plan.row_weight[r], 1e-15);
    }
}

TEST(SoftmaxTopk, TiesGoToTheLowerExpert) {
    const int64_t T = 3, E = 6, k = 2, d = 5;
    MoeConfig c = config(E, k);
    Rig<double> rig(c, T);
    rig.set("router.w", std::vector<double>(size_t(E * d), 0.0));
    rig.set("router.b", {0.0, 1.0, 0.5, 1.0, 0.5, 1.0});  // experts 1, 3, 5 tie at the top
    const auto x = test::random_normal(size_t(T * d), 4);
    rig.forward(rig.input(x, T));
    for (const auto& row : rig.rows_by_token()) {
        ASSERT_EQ(row.size(), 2u);
        EXPECT_EQ(row[0].first, 1);
        EXPECT_EQ(row[1].first, 3);
    }
}

TEST(SoftmaxTopk, SingleExpertGetsWeightOne) {
    MoeConfig c = config(1, 1);
    Rig<double> rig(c, 7);
    const auto x = test::random_normal(size_t(7 * 5), 5);
    rig.forward(rig.input(x, 7));
    ASSERT_EQ(rig.plan.rows(), 7);
    for (int64_t r = 0; r < 7; ++r) EXPECT_DOUBLE_EQ(rig.plan.row_weight[r], 1.0);
    EXPECT_DOUBLE_EQ(rig.losses.aux_loss, 1.0);       // f = P = 1
    EXPECT_DOUBLE_EQ(rig.losses.importance_loss, 0);  // one expert: no spread
}

TEST(SoftmaxTopk, CapacityByProbabilityAndByPosition) {
    const int64_t T = 64, E = 4, k = 2, d = 5;
    for (DropPolicy policy : {DropPolicy::probability, DropPolicy::position}) {
        MoeConfig c = config(E, k);
        c.capacity_factor = 0.5;  // ceil(0.5 * 128 / 4) = 16 seats
        c.drop_policy = policy;
        Rig<double> rig(c, T, 6);
        auto b = rig.get("router.b");
        b[0] += 2;  // expert 0 is oversubscribed
        rig.set("router.b", b);
        const auto x = test::random_normal(size_t(T * d), 7);
        rig.forward(rig.input(x, T));
        const auto& p = rig.plan;
        EXPECT_GT(p.dropped, 0);
        EXPECT_EQ(p.rows() + p.dropped, T * k);
        for (int64_t e = 0; e < E; ++e) EXPECT_LE(p.count(e), 16);
        EXPECT_EQ(p.count(0), 16);
        // Who kept a seat on expert 0: the most probable tokens, or the first ones.
        const auto lg = ref::logits(x, rig.get("router.w"), rig.get("router.b"), T, d, E);
        std::vector<double> prob0;  // probability of expert 0 for tokens that chose it
        std::vector<int64_t> chose0;
        for (int64_t t = 0; t < T; ++t) {
            double z = 0;
            for (int64_t e = 0; e < E; ++e) z += std::exp(lg[size_t(t * E + e)]);
            int64_t better = 0;
            for (int64_t e = 1; e < E; ++e) better += lg[size_t(t * E + e)] > lg[size_t(t * E)];
            if (better < k) {
                chose0.push_back(t);
                prob0.push_back(std::exp(lg[size_t(t * E)]) / z);
            }
        }
        ASSERT_GT(chose0.size(), 16u);
        std::vector<int64_t> expect;
        if (policy == DropPolicy::position) {
            expect.assign(chose0.begin(), chose0.begin() + 16);
        } else {
            auto sorted = prob0;
            std::sort(sorted.rbegin(), sorted.rend());
            for (size_t i = 0; i < chose0.size(); ++i)
                if (prob0[i] >= sorted[15]) expect.push_back(chose0[i]);
        }
        std::vector<int64_t> got(p.row_token + p.offsets[0], p.row_token + p.offsets[1]);
        EXPECT_EQ(got, expect);
    }
}

// The router's loss and gradient against softmax_topk written densely, over awkward shapes.
TEST(SoftmaxTopk, BackwardMatchesDenseReferenceOverAwkwardShapes) {
    uint64_t seed = 1;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(2, E), E}) {
                MoeConfig c = config(E, k);
                c.softmax_topk.renormalize = seed % 2 == 0;
                c.softmax_topk.softmax_after_topk = seed % 5 == 0;
                c.capacity_factor = seed % 3 == 0 ? 1.0 : 0.0;
                c.drop_policy = seed % 4 < 2 ? DropPolicy::probability : DropPolicy::position;
                SCOPED_TRACE(testing::Message() << "T=" << T << " E=" << E << " k=" << k);
                const int64_t d = c.d_model;
                Rig<double> rig(c, T, seed);
                const auto x = test::random_normal(size_t(T * d), seed + 1);
                const double loss = rig.forward(rig.input(x, T));
                const auto kept = ref::kept_mask(rig.plan);
                const auto lg = ref::logits(x, rig.get("router.w"), rig.get("router.b"), T, d, E);
                const auto sg = ref::softmax_topk_gate(lg, kept, T, E, c);
                EXPECT_TRUE(test::all_close(ref::dense_gate(rig.plan), sg.gate, 1e-14, 1e-12));
                EXPECT_NEAR(loss, sg.total, 1e-12 * (1 + std::abs(sg.total)));
                // Upstream dL/d(gate) random; the router sees it per row.
                const auto d_gate = test::random_normal(size_t(T * E), seed + 2);
                std::vector<double> d_rw(size_t(rig.plan.rows()));
                for (int64_t e = 0; e < E; ++e)
                    for (int64_t r = rig.plan.offsets[e]; r < rig.plan.offsets[e + 1]; ++r)
                        d_rw[size_t(r)] = d_gate[size_t(rig.plan.row_token[r] * E + e)];
                std::vector<double> d_x(size_t(T * d), 0.0);
                rig.router->backward(rig.input(x, T), rig.plan, d_rw.data(), d_x.data());
                const auto d_l = ref::softmax_topk_gate_backward(lg, kept, T, E, c, d_gate);
                const auto w = rig.get("router.w");
                std::vector<double> d_w(size_t(E * d), 0.0), d_b(size_t(E), 0.0),
                    want_x(size_t(T * d), 0.0);
                for (int64_t t = 0; t < T; ++t)
                    for (int64_t e = 0; e < E; ++e) {
                        const double g = d_l[size_t(t * E + e)];
                        d_b[size_t(e)] += g;
                        for (int64_t j = 0; j < d; ++j) {
                            d_w[size_t(e * d + j)] += g * x[size_t(t * d + j)];
                            want_x[size_t(t * d + j)] += g * w[size_t(e * d + j)];
                        }
                    }
                EXPECT_TRUE(test::all_close(rig.grad("router.w"), d_w, 1e-12, 1e-10));
                EXPECT_TRUE(test::all_close(rig.grad("router.b"), d_b, 1e-12, 1e-10));
                EXPECT_TRUE(test::all_close(d_x, want_x, 1e-12, 1e-10));
                ++seed;
            }
}

// Loss = sum_r c[row_choice[r]] * row_weight[r] + weighted router loss, by central finite
// differences in w, b and x; logits well apart so that no choice flips.
void check_finite_differences(MoeConfig c, bool training) {
    const int64_t T = 7, E = c.n_experts, k = c.top_k, d = c.d_model;
    Rig<double> rig(c, T, 8, 4.0);
    auto x = test::random_normal(size_t(T * d), 9);
    const auto coef = test::random_normal(size_t(T * k), 10);
    rig.forward(rig.input(x, T, training, 42));
    std::vector<int32_t> base(rig.plan.row_choice, rig.plan.row_choice + rig.plan.rows());
    bool flipped = false;
    auto loss = [&] {
        const double l = rig.forward(rig.input(x, T, training, 42));
        std::vector<int32_t> now(rig.plan.row_choice, rig.plan.row_choice + rig.plan.rows());
        if (now != base) flipped = true;
        double s = l;
        for (int64_t r = 0; r < rig.plan.rows(); ++r)
            s += coef[size_t(rig.plan.row_choice[r])] * rig.plan.row_weight[r];
        return s;
    };
    const Tensor w = rig.params.get("moe.router.w"), b = rig.params.get("moe.router.b");
    const auto num_w = test::numeric_gradient(loss, w.ptr<double>(), size_t(E * d));
    const auto num_b = test::numeric_gradient(loss, b.ptr<double>(), size_t(E));
    const auto num_x = test::numeric_gradient(loss, x.data(), x.size());
    ASSERT_FALSE(flipped) << "a choice flipped under the finite-difference step";
    rig.forward(rig.input(x, T, training, 42));
    std::vector<double> d_rw(size_t(rig.plan.rows())), d_x(x.size(), 0.0);
    for (int64_t r = 0; r < rig.plan.rows(); ++r)
        d_rw[size_t(r)] = coef[size_t(rig.plan.row_choice[r])];
    rig.router->backward(rig.input(x, T, training, 42), rig.plan, d_rw.data(), d_x.data());
    EXPECT_TRUE(test::all_close(rig.grad("router.w"), num_w, 1e-8, 1e-6));
    EXPECT_TRUE(test::all_close(rig.grad("router.b"), num_b, 1e-8, 1e-6));
    EXPECT_TRUE(test::all_close(d_x, num_x, 1e-8, 1e-6));
}

TEST(SoftmaxTopk, BackwardMatchesFiniteDifferences) {
    for (int variant = 0; variant < 4; ++variant) {
        SCOPED_TRACE(variant);
        MoeConfig c = config(6, 2);
        c.softmax_topk.renormalize = variant % 2 == 0;
        c.softmax_topk.softmax_after_topk = variant == 3;
        c.capacity_factor = variant >= 2 ? 0.75 : 0.0;  // 3 seats for 14 choices over 6
        check_finite_differences(c, false);
    }
}

TEST(SoftmaxTopk, JitterOnlyInTrainingReproducibleAndDifferentiable) {
    MoeConfig c = config(6, 2);
    c.jitter = 0.1;
    const int64_t T = 7, d = c.d_model, E = 6;
    Rig<double> rig(c, T, 11);
    const auto x = test::random_normal(size_t(T * d), 12);
    auto probs_of = [&](bool training, uint64_t seed) {
        rig.forward(rig.input(x, T, training, seed));
        return std::vector<double>(rig.router->probs(), rig.router->probs() + T * E);
    };
    const auto eval = probs_of(false, 1), eval2 = probs_of(false, 2);
    EXPECT_EQ(eval, eval2);  // no noise outside training
    const auto a = probs_of(true, 5), a2 = probs_of(true, 5), b = probs_of(true, 6);
    EXPECT_EQ(a, a2);
    EXPECT_NE(a, b);
    EXPECT_NE(a, eval);
    check_finite_differences(c, true);
}

TEST(SoftmaxTopk, FloatMatchesDouble) {
    const int64_t T = 64, E = 8, k = 2, d = 32;
    MoeConfig c = config(E, k, d);
    Rig<double> rd(c, T, 13);
    Rig<float> rf(c, T, 13);
    const auto x = test::random_normal(size_t(T * d), 14);
    const auto xf = test::to_f32(x);
    const double ld = rd.forward(rd.input(x, T)), lf = rf.forward(rf.input(xf, T));
    EXPECT_NEAR(lf, ld, 1e-5);
    ASSERT_EQ(rf.plan.rows(), rd.plan.rows());
    std::vector<double> wd, wf;
    for (int64_t r = 0; r < rd.plan.rows(); ++r) {
        EXPECT_EQ(rf.plan.row_choice[r], rd.plan.row_choice[r]);
        wd.push_back(rd.plan.row_weight[r]);
        wf.push_back(rf.plan.row_weight[r]);
    }
    EXPECT_TRUE(test::all_close(wf, wd, 1e-6, 1e-5));
    std::vector<double> g(size_t(rd.plan.rows()));
    for (size_t i = 0; i < g.size(); ++i) g[i] = std::sin(double(i));
    const auto gf = test::to_f32(g);
    std::vector<double> dxd(x.size(), 0.0);
    std::vector<float> dxf(x.size(), 0.0f);
    rd.router->backward(rd.input(x, T), rd.plan, g.data(), dxd.data());
    rf.router->backward(rf.input(xf, T), rf.plan, gf.data(), dxf.data());
    EXPECT_TRUE(test::all_close(test::to_f64(dxf), dxd, 1e-5, 1e-4));
    EXPECT_TRUE(test::all_close(rf.grad("router.w"), rd.grad("router.w"), 1e-5, 1e-4));
}

}  // namespace
}  // namespace moe::sparse
