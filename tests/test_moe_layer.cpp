// The MoE layer with the softmax_topk router:
// - against the dense double reference (every expert on every token, masked by the plan)
//   on the output, the router loss and every gradient (router w and b, expert w1/w3/w2,
//   shared experts and their gate, d_x), swept over T in {1, 3, 7, 64}, E in {1, 2, 8, 64},
//   k in {1, 2, E}, with capacity, GELU experts and shared experts mixed in;
// - central finite differences through the whole layer in double, logits well separated;
// - the float path against double, both expert-parallel modes, run-to-run determinism;
// - an expert with no tokens (its gradient untouched), every token on one expert, dropped
//   tokens (0 from the routed path), statistics, the PyTorch fixture of the Mixtral form;
// - MoeConfig: reading a config section, and validation errors naming the option.
#include <cmath>
#include <functional>
#include <limits>
#include <memory>

#include "core/threads.h"
#include "io/config.h"
#include "moe/moe_block.h"
#include "moe/moe_layer.h"
#include "moe_reference.h"
#include "test_support.h"

namespace moe::sparse {
namespace {

namespace ref = reference;
constexpr double kEpsF = std::numeric_limits<float>::epsilon();

// A layer with its own parameter and gradient arenas, declared under "moe.".
template <class R>
struct Layer {
    MoeConfig cfg;
    Arena params, grads;
    std::unique_ptr<MoeLayer<R>> layer;
    const std::string prefix = "moe.";

    Layer(const MoeConfig& c, int64_t max_T, uint64_t seed = 1, double std = 0.5) : cfg(c) {
        layer = std::make_unique<MoeLayer<R>>(cfg, max_T);
        layer->declare(params, prefix);
        params.allocate();
        grads = params.clone_layout();
        layer->bind(params, grads);
        Rng rng(seed);
        layer->init_weights(rng, std);
        // The router's own init (N(0, 0.02)) makes nearly equal logits; tests want spread.
        const int64_t E = cfg.n_experts, d = cfg.d_model;
        set("router.w",
            test::random_normal(size_t(E * d), seed + 1000, 1.0 / std::sqrt(double(d))));
        set("router.b", test::random_normal(size_t(E), seed + 2000, 0.3));
    }
    std::vector<double> get(const std::string& n) const {
        return ref::tensor_as_f64(params, prefix + n);
    }
    std::vector<double> grad(const std::string& n) const {
        return ref::tensor_as_f64(grads, prefix + n);
    }
    R* ptr(const std::string& n) const { return params.get(prefix + n).ptr<R>(); }
    R* gptr(const std::string& n) const { return grads.get(prefix + n).ptr<R>(); }
    void set(const std::string& n, const std::vector<double>& v) {
        const Tensor t = params.get(prefix + n);
        ASSERT_EQ(size_t(t.numel()), v.size()) << n;
        for (size_t i = 0; i < v.size(); ++i) t.ptr<R>()[i] = R(v[i]);
    }
    // Every parameter tensor's local name.
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (const auto& e : params.entries()) out.push_back(e.name.substr(prefix.size()));
        return out;
    }
    // Runs forward and backward; returns the router loss.
    double run(std::vector<R>& out, const std::vector<R>& x, int64_t T, const std::vector<R>& d_out,
               std::vector<R>& d_x, const RouterInput<R>& extras = {}) {
        out.assign(size_t(T * cfg.d_model), R(NAN));
        d_x.assign(size_t(T * cfg.d_model), R(0));
        grads.zero();
        const double loss = layer->forward(out.data(), x.data(), T, extras);
        layer->backward(d_out.data(), d_x.data());
        return loss;
    }
};

MoeConfig small_config(int64_t E, int64_t k, int64_t d = 6, int64_t H = 5) {
    MoeConfig c;
    c.d_model = d;
    c.d_expert = H;
    c.n_experts = E;
    c.top_k = k;
    c.aux_loss_coef = 0.1;
    c.z_loss_coef = 0.02;
    c.importance_coef = 0.05;
    c.causal = false;  // capacity by probability is allowed only without a causal mask
    return c;
}

// d_w [E, d] = d_logits^T x, d_b = column sums, d_x += d_logits @ w.
void gate_grads(const std::vector<double>& d_l, const std::vector<double>& x,
                const std::vector<double>& w, int64_t T, int64_t d, int64_t E,
                std::vector<double>& d_w, std::vector<double>& d_b, std::vector<double>& d_x) {
    d_w.assign(size_t(E * d), 0.0);
    d_b.assign(size_t(E), 0.0);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t e = 0; e < E; ++e) {
            const double g = d_l[size_t(t * E + e)];
            d_b[size_t(e)] += g;
            for (int64_t j = 0; j < d; ++j) {
                d_w[size_t(e * d + j)] += g * x[size_t(t * d + j)];
                d_x[size_t(t * d + j)] += g * w[size_t(e * d + j)];
            }
        }
}

// Checks a double layer against the dense reference on one batch; `tweak` may change the
// parameters first.
void check_against_reference(const MoeConfig& cfg, int64_t T, uint64_t seed,
                             const std::function<void(Layer<double>&)>& tweak = {}) {
    SCOPED_TRACE(testing::Message() << "T=" << T << " E=" << cfg.n_experts << " k=" << cfg.top_k
                                    << " cf=" << cfg.capacity_factor << " S=" << cfg.n_shared
                                    << " gelu=" << (cfg.expert == ExpertKind::gelu)
                                    << " renorm=" << cfg.softmax_topk.renormalize
                                    << " after=" << cfg.softmax_topk.softmax_after_topk);
    const int64_t d = cfg.d_model, E = cfg.n_experts;
    Layer<double> L(cfg, T, seed);
    if (tweak) tweak(L);
    const auto x = test::random_normal(size_t(T * d), seed + 100);
    const auto d_out = test::random_normal(size_t(T * d), seed + 200);
    std::vector<double> out, d_x;
    const double loss = L.run(out, x, T, d_out, d_x);
    const auto& plan = L.layer->plan();

    // The router's weights and losses against softmax_topk written densely.
    const auto gate = ref::dense_gate(plan), kept = ref::kept_mask(plan);
    const auto w = L.get("router.w"), b = L.get("router.b");
    const auto lg = ref::logits(x, w, b, T, d, E);
    const auto sg = ref::softmax_topk_gate(lg, kept, T, E, cfg);
    EXPECT_TRUE(test::all_close(gate, sg.gate, 1e-14, 1e-12)) << "router weights";
    for (size_t i = 0; i < kept.size(); ++i)
        EXPECT_LE(kept[i], sg.chosen[i]) << "kept but not chosen";
    EXPECT_NEAR(loss, sg.total, 1e-12 * (1 + std::abs(sg.total)));
    EXPECT_NEAR(L.layer->losses().aux_loss, sg.aux, 1e-12);
    EXPECT_NEAR(L.layer->losses().z_loss, sg.z, 1e-12 * (1 + sg.z));
    EXPECT_NEAR(L.layer->losses().importance_loss, sg.importance, 1e-12);
    if (cfg.capacity_factor > 0) {
        const int64_t cap =
            int64_t(std::ceil(cfg.capacity_factor * double(T * cfg.top_k) / double(E)));
        for (int64_t e = 0; e < E; ++e) EXPECT_LE(plan.count(e), cap);
    }

    // Output and every gradient against the reference.
    const ref::Model m = ref::model_from(L.params, L.prefix, cfg);
    EXPECT_TRUE(test::all_close(out, ref::forward(m, x, T, gate), 1e-13, 1e-11)) << "output";
    ref::Grads rg = ref::backward(m, x, T, gate, d_out);
    const auto d_l = ref::softmax_topk_gate_backward(lg, kept, T, E, cfg, rg.d_gate);
    std::vector<double> d_w, d_b;
    gate_grads(d_l, x, w, T, d, E, d_w, d_b, rg.d_x);
    EXPECT_TRUE(test::all_close(L.grad("router.w"), d_w, 1e-12, 1e-10)) << "router.w";
    EXPECT_TRUE(test::all_close(L.grad("router.b"), d_b, 1e-12, 1e-10)) << "router.b";
    EXPECT_TRUE(test::all_close(L.grad("experts.w1"), rg.d_w1, 1e-12, 1e-10)) << "w1";
    if (cfg.expert == ExpertKind::swiglu) {
        EXPECT_TRUE(test::all_close(L.grad("experts.w3"), rg.d_w3, 1e-12, 1e-10)) << "w3";
    }
    EXPECT_TRUE(test::all_close(L.grad("experts.w2"), rg.d_w2, 1e-12, 1e-10)) << "w2";
    if (cfg.n_shared > 0) {
        EXPECT_TRUE(test::all_close(L.grad("shared.w1"), rg.d_sw1, 1e-12, 1e-10)) << "shared.w1";
        EXPECT_TRUE(test::all_close(L.grad("shared.w3"), rg.d_sw3, 1e-12, 1e-10)) << "shared.w3";
        EXPECT_TRUE(test::all_close(L.grad("shared.w2"), rg.d_sw2, 1e-12, 1e-10)) << "shared.w2";
        if (cfg.shared_gate) {
            EXPECT_TRUE(test::all_close(L.grad("shared.gate"), rg.d_sgate, 1e-12, 1e-10)) << "gate";
        }
    }
    EXPECT_TRUE(test::all_close(d_x, rg.d_x, 1e-12, 1e-10)) << "d_x";
}

TEST(MoeLayer, MatchesDenseReferenceOverAwkwardShapes) {
    uint64_t seed = 1;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t k : {int64_t(1), std::min<int64_t>(2, E), E}) {
                if (T * E > 64 * 8 && k == E) continue;  // T=64, E=64, k=64: slow, covered below
                MoeConfig c = small_config(E, k);
                // Vary the options with the seed so that every combination meets a few shapes.
                c.softmax_topk.renormalize = seed % 2 == 0;
                c.softmax_topk.softmax_after_topk = seed % 5 == 0;
                c.capacity_factor = seed % 3 == 0 ? 1.0 : 0.0;
                c.drop_policy = seed % 4 < 2 ? DropPolicy::probability : DropPolicy::position;
                c.expert = seed % 7 == 3 ? ExpertKind::gelu : ExpertKind::swiglu;
                c.n_shared = seed % 4 == 1 ? 1 : (seed % 8 == 2 ? 2 : 0);
                c.d_shared = seed % 8 == 2 ? 3 : 0;
                c.shared_gate = seed % 3 == 1;
                check_against_reference(c, T, seed++);
            }
}

TEST(MoeLayer, MatchesDenseReferenceWithKEqualsEManyTokens) {
    MoeConfig c = small_config(64, 64, 4, 3);
    check_against_reference(c, 64, 77);
}

// Finite differences through the whole layer: loss = sum(out * w_out) + router loss, with
// shared gated experts, capacity drops and every balancing loss on.
void whole_layer_matches_finite_differences(ExpertKind kind) {
    for (bool renorm : {true, false}) {
        MoeConfig c = small_config(4, 2, 5, 4);
        c.expert = kind;
        c.softmax_topk.renormalize = renorm;
        c.n_shared = 1;
        c.d_shared = 3;
        c.shared_gate = true;
        c.capacity_factor = 0.75;  // ceil(0.75 * 7 * 2 / 4) = 3 seats: some choices dropped
        const int64_t T = 7, d = c.d_model, E = c.n_experts;
        Layer<double> L(c, T, 5);
        // Router weights scaled up so the k-th and (k+1)-th logits are well apart.
        auto w = L.get("router.w");
        for (auto& v : w) v *= 4;
        L.set("router.w", w);
        auto x = test::random_normal(size_t(T * d), 6);
        const auto w_out = test::random_normal(size_t(T * d), 7);
        std::vector<double> out(size_t(T * d));
        L.layer->forward(out.data(), x.data(), T);
        const auto base_kept = ref::kept_mask(L.layer->plan());
        ASSERT_GT(L.layer->plan().dropped, 0);
        // The smallest gap between a kept and the best unkept logit, and between any two
        // competing for a seat, must dwarf the finite-difference step.
        const auto lg = ref::logits(x, L.get("router.w"), L.get("router.b"), T, d, E);
        for (int64_t t = 0; t < T; ++t)
            for (int64_t a = 0; a < E; ++a)
                for (int64_t b2 = a + 1; b2 < E; ++b2)
                    ASSERT_GT(std::abs(lg[size_t(t * E + a)] - lg[size_t(t * E + b2)]), 1e-3);
        bool flipped = false;
        auto loss = [&] {
            const double l = L.layer->forward(out.data(), x.data(), T);
            if (ref::kept_mask(L.layer->plan()) != base_kept) flipped = true;
            return test::weighted_sum(out, w_out) + l;
        };
        std::vector<std::pair<std::string, std::vector<double>>> numeric;
        for (const std::string& n : L.names()) {
            const Tensor t = L.params.get(L.prefix + n);
            numeric.push_back(
                {n, test::numeric_gradient(loss, t.ptr<double>(), size_t(t.numel()))});
        }
        const auto num_x = test::numeric_gradient(loss, x.data(), x.size());
        ASSERT_FALSE(flipped) << "a routing choice changed under the finite-difference step";
        std::vector<double> d_x;
        std::vector<double> xo = x;
        L.run(out, xo, T, w_out, d_x);
        for (const auto& [n, num] : numeric)
            EXPECT_TRUE(test::all_close(L.grad(n), num, 1e-8, 1e-6)) << n;
        EXPECT_TRUE(test::all_close(d_x, num_x, 1e-8, 1e-6)) << "d_x";
    }
}

TEST(MoeLayer, WholeLayerMatchesFiniteDifferences) {
    whole_layer_matches_finite_differences(ExpertKind::swiglu);
}

// The 2-matrix experts through the whole layer: ReLU's kink at 0 is not met by these
// inputs (a pre-activation within the step of 0 would show as a gradient mismatch).
TEST(MoeLayer, WholeLayerWithReluExpertsMatchesFiniteDifferences) {
    whole_layer_matches_finite_differences(ExpertKind::relu);
}

// The float layer against the double one on the same weights, with the expert bank forced
// into each threading mode.
TEST(MoeLayer, FloatMatchesDoubleInBothParallelModes) {
    for (auto mode :
         {ExpertBank<float>::Parallel::over_gemm, ExpertBank<float>::Parallel::over_experts}) {
        MoeConfig c = small_config(16, 4, 32, 48);
        c.n_shared = 1;
        c.shared_gate = true;
        const int64_t T = 64, d = c.d_model;
        Layer<double> Ld(c, T, 3, 0.2);
        Layer<float> Lf(c, T, 3, 0.2);
        for (const auto& n : Ld.names()) Lf.set(n, Ld.get(n));
        Lf.layer->experts().set_parallel(mode);
        const auto x = test::random_normal(size_t(T * d), 8);
        const auto g = test::random_normal(size_t(T * d), 9);
        std::vector<double> out, dx;
        std::vector<float> outf, dxf;
        const double loss = Ld.run(out, x, T, g, dx);
        const auto xf = test::to_f32(x), gf = test::to_f32(g);
        const double lossf = Lf.run(outf, xf, T, gf, dxf);
        EXPECT_EQ(Ld.layer->plan().rows(), Lf.layer->plan().rows());
        EXPECT_NEAR(lossf, loss, 1e-5);
        const double tol = 200 * kEpsF;
        EXPECT_TRUE(test::all_close(outf, out, tol, tol));
        EXPECT_TRUE(test::all_close(dxf, dx, tol, 10 * tol));
        for (const auto& n : Ld.names())
            EXPECT_TRUE(test::all_close(Lf.grad(n), Ld.grad(n), 10 * tol, 10 * tol)) << n;
    }
}

// Experts are spread over the threads only when the blocks balance the threads.
TEST(MoeLayer, ExpertBankSpreadsExpertsOnlyWhenTheyBalance) {
    using P = ExpertBank<float>::Parallel;
    ExpertBank<float> bank(ExpertKind::swiglu, 8, 4, 4);
    const int before = num_threads();
    set_num_threads(2);
    const std::vector<int64_t> even = {0, 100, 200, 300, 400, 500, 600, 700, 800};
    const std::vector<int64_t> one_big = {0, 700, 710, 720, 730, 740, 750, 760, 770};
    const std::vector<int64_t> few = {0, 0, 0, 0, 0, 0, 0, 100, 200};  // 2 busy experts
    EXPECT_EQ(bank.resolve(even.data()), P::over_experts);
    EXPECT_EQ(bank.resolve(one_big.data()), P::over_gemm);
    EXPECT_EQ(bank.resolve(few.data()), P::over_gemm);
    set_num_threads(1);
    EXPECT_EQ(bank.resolve(even.data()), P::over_gemm);
    set_num_threads(before);
    bank.set_parallel(P::over_experts);
    EXPECT_EQ(bank.resolve(one_big.data()), P::over_experts);
    ExpertBank<double> bd(ExpertKind::swiglu, 8, 4, 4);
    EXPECT_EQ(bd.resolve(even.data()), ExpertBank<double>::Parallel::over_gemm);
}

TEST(MoeLayer, SameBitsRunToRun) {
    MoeConfig c = small_config(8, 2, 64, 96);
    const int64_t T = 256, d = c.d_model;
    Layer<float> L(c, T, 4, 0.1);
    const auto x = test::random_normal_f32(size_t(T * d), 10);
    const auto g = test::random_normal_f32(size_t(T * d), 11);
    std::vector<float> out1, dx1, out2, dx2;
    L.run(out1, x, T, g, dx1);
    const auto gw = L.grad("experts.w1");
    L.run(out2, x, T, g, dx2);
    EXPECT_EQ(out1, out2);
    EXPECT_EQ(dx1, dx2);
    EXPECT_EQ(gw, L.grad("experts.w1"));
}

TEST(MoeLayer, ExpertWithoutTokensKeepsItsGradientUntouched) {
    MoeConfig c = small_config(4, 1);
    const int64_t T = 7, d = c.d_model, H = c.d_expert;
    Layer<double> L(c, T, 12);
    auto b = L.get("router.b");
    b[2] = -100;  // expert 2 is never chosen
    L.set("router.b", b);
    const auto x = test::random_normal(size_t(T * d), 13);
    const auto g = test::random_normal(size_t(T * d), 14);
    std::vector<double> out(size_t(T * d)), d_x(size_t(T * d), 0.0);
    L.layer->forward(out.data(), x.data(), T);
    ASSERT_EQ(L.layer->plan().count(2), 0);
    std::fill(L.gptr("experts.w1"), L.gptr("experts.w1") + 4 * H * d, 7.0);
    std::fill(L.gptr("experts.w3"), L.gptr("experts.w3") + 4 * H * d, 7.0);
    std::fill(L.gptr("experts.w2"), L.gptr("experts.w2") + 4 * H * d, 7.0);
    L.layer->backward(g.data(), d_x.data());
    for (const char* n : {"experts.w1", "experts.w3", "experts.w2"}) {
        const auto gr = L.grad(n);
        for (int64_t i = 2 * H * d; i < 3 * H * d; ++i) EXPECT_EQ(gr[size_t(i)], 7.0) << n;
        for (int64_t e = 0; e < 4; ++e) {
            if (L.layer->plan().count(e) == 0) continue;
            int64_t changed = 0;
            for (int64_t i = e * H * d; i < (e + 1) * H * d; ++i) changed += gr[size_t(i)] != 7.0;
            EXPECT_GT(changed, 0) << n << ": expert " << e << " has tokens, its gradient must move";
        }
    }
    EXPECT_EQ(L.layer->stats().tokens_per_expert[2], 0);
}

TEST(MoeLayer, AllTokensOnOneExpert) {
    auto favour_5 = [](Layer<double>& L) {
        auto b = L.get("router.b");
        b[5] = 100;
        L.set("router.b", b);
    };
    for (int64_t k : {1, 3}) {
        MoeConfig c = small_config(8, k);
        Layer<double> L(c, 64, 15);
        favour_5(L);
        const int64_t T = 64, d = c.d_model;
        const auto x = test::random_normal(size_t(T * d), 16);
        std::vector<double> out(size_t(T * d));
        L.layer->forward(out.data(), x.data(), T);
        EXPECT_EQ(L.layer->stats().tokens_per_expert[5], T);
        EXPECT_EQ(L.layer->stats().max_load, double(T));
        EXPECT_DOUBLE_EQ(L.layer->stats().load_imbalance, 8.0 / double(k));
        // Outputs and every gradient against the reference with that bias.
        check_against_reference(c, T, 15, favour_5);
    }
}

TEST(MoeLayer, DroppedTokensGetZeroFromTheRoutedPath) {
    MoeConfig c = small_config(2, 1);
    c.capacity_factor = 0.25;  // ceil(0.25 * 8 / 2) = 1 seat per expert
    const int64_t T = 8, d = c.d_model;
    Layer<float> L(c, T, 17);
    const auto x = test::random_normal_f32(size_t(T * d), 18);
    std::vector<float> out(size_t(T * d), NAN);
    L.layer->forward(out.data(), x.data(), T);
    const auto& p = L.layer->plan();
    EXPECT_LE(p.rows(), 2);
    EXPECT_EQ(p.rows() + p.dropped, T);
    int64_t zero_rows = 0;
    for (int64_t t = 0; t < T; ++t) {
        if (p.token_offsets[t + 1] > p.token_offsets[t]) continue;
        ++zero_rows;
        for (int64_t j = 0; j < d; ++j) EXPECT_EQ(out[size_t(t * d + j)], 0.0f);
    }
    EXPECT_EQ(zero_rows, T - p.rows());
    EXPECT_DOUBLE_EQ(L.layer->stats().dropped_fraction, double(p.dropped) / double(T));
}

TEST(MoeLayer, Statistics) {
    MoeConfig c = small_config(8, 2);
    const int64_t T = 64, d = c.d_model, E = 8;
    Layer<double> L(c, T, 19);
    const auto x = test::random_normal(size_t(T * d), 20);
    std::vector<double> out(size_t(T * d));
    const double loss = L.layer->forward(out.data(), x.data(), T);
    const MoeStats& s = L.layer->stats();
    EXPECT_EQ(s.tokens, T);
    EXPECT_EQ(s.rows, T * 2);
    int64_t sum = 0, mx = 0;
    for (int64_t e = 0; e < E; ++e) {
        EXPECT_EQ(s.tokens_per_expert[size_t(e)], L.layer->plan().count(e));
        sum += s.tokens_per_expert[size_t(e)];
        mx = std::max(mx, s.tokens_per_expert[size_t(e)]);
    }
    EXPECT_EQ(sum, T * 2);
    EXPECT_EQ(s.max_load, double(mx));
    EXPECT_EQ(s.mean_load, double(T * 2) / double(E));
    EXPECT_EQ(s.dropped_fraction, 0.0);
    // Entropy from the router probabilities, recomputed here.
    const double* p = L.layer->router().probs();
    double h = 0;
    for (int64_t i = 0; i < T * E; ++i) h -= p[i] * std::log(p[i]);
    EXPECT_NEAR(s.router_entropy, h / double(T), 1e-12);
    EXPECT_GT(s.router_entropy, 0.0);
    EXPECT_LE(s.router_entropy, std::log(double(E)) + 1e-12);
    EXPECT_EQ(s.losses.weighted_total, loss);
    EXPECT_GT(s.losses.aux_loss, 0.0);
    // Uniform probabilities give aux = 1 (whatever the load) and entropy log E.
    std::fill(L.ptr("router.w"), L.ptr("router.w") + E * d, 0.0);
    std::fill(L.ptr("router.b"), L.ptr("router.b") + E, 0.0);
    L.layer->forward(out.data(), x.data(), 4);  // ties: every token takes experts 0 and 1
    EXPECT_NEAR(L.layer->stats().router_entropy, std::log(8.0), 1e-12);
    EXPECT_EQ(L.layer->stats().tokens_per_expert[0], 4);
    EXPECT_EQ(L.layer->stats().tokens_per_expert[1], 4);
    EXPECT_NEAR(L.layer->losses().aux_loss, 8 * 2 * 0.5 * 0.125, 1e-12);
    L.layer->after_step();  // softmax_topk has no post-step update; must be harmless
}

TEST(MoeLayer, SavedBytesPerToken) {
    MoeConfig c = small_config(8, 2, 16, 32);
    Layer<float> L(c, 128, 1);
    // Kept per token: xs and ys (k rows of d), h1, h3, act (k rows of H), the plan's rows and
    // the router's logits, probabilities and choices; a bit over k * (2d + 3H) floats.
    const double core = 2.0 * (2 * 16 + 3 * 32) * 4;
    EXPECT_GT(L.layer->saved_bytes_per_token(), core);
    EXPECT_LT(L.layer->saved_bytes_per_token(), core + 200);
}

TEST(MoeLayer, RejectsBadUse) {
    MoeConfig c = small_config(4, 2);
    Layer<float> L(c, 8, 1);
    std::vector<float> x(size_t(9 * c.d_model)), out(x.size()), dx(x.size());
    EXPECT_THROW(L.layer->forward(out.data(), x.data(), 9), Error);  // above max_tokens
    EXPECT_THROW(L.layer->forward(out.data(), x.data(), 0), Error);
    MoeLayer<float> fresh(c, 8);
    EXPECT_THROW(fresh.backward(x.data(), dx.data()), Error);  // no forward
    MoeConfig soft = c;
    soft.router = "soft";
    soft.causal = false;
    // Soft MoE is its own block (tests/test_soft_moe.cpp tests it): the factory picks it,
    // and MoeLayer refuses it.
    EXPECT_EQ(sparse::make_moe_block<float>(soft, 8)->routing_plan(), nullptr);
    EXPECT_NE(sparse::make_moe_block<float>(c, 8)->routing_plan(), nullptr);
    EXPECT_THROW(MoeLayer<float>(soft, 8), Error);
    MoeConfig unknown = c;
    unknown.router = "nope";
    try {
        MoeLayer<float> s(unknown, 8);
        FAIL() << "unknown router accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("unknown router 'nope'"), std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("softmax_topk"), std::string::npos) << e.what();
    }
}

// ---- the PyTorch fixture: Mixtral form ----

template <class R>
void check_mixtral_fixture(double tol) {
    test::Fixture fx("softmax_topk");
    MoeConfig c;
    c.d_model = 8;
    c.d_expert = 10;
    c.n_experts = 4;
    c.top_k = 2;
    c.softmax_topk.renormalize = true;
    const auto coefs = fx.get("coefs");
    c.aux_loss_coef = coefs[0];
    c.z_loss_coef = coefs[1];
    c.importance_coef = 0;
    const int64_t T = 12;
    Layer<R> L(c, T);
    L.set("router.w", fx.get("w"));
    L.set("router.b", fx.get("b"));
    L.set("experts.w1", fx.get("w1"));
    L.set("experts.w3", fx.get("w3"));
    L.set("experts.w2", fx.get("w2"));
    std::vector<R> x, dy, out, dx;
    for (double v : fx.get("x")) x.push_back(R(v));
    for (double v : fx.get("dy")) dy.push_back(R(v));
    const double loss = L.run(out, x, T, dy, dx);
    EXPECT_TRUE((test::all_close<R, double>(out, fx.get("y"), tol, tol))) << "y";
    EXPECT_NEAR(L.layer->losses().aux_loss, fx.get("aux")[0], tol);
    EXPECT_NEAR(L.layer->losses().z_loss, fx.get("z")[0], tol * 10);
    EXPECT_NEAR(loss, coefs[0] * fx.get("aux")[0] + coefs[1] * fx.get("z")[0], tol);
    // The chosen experts, in PyTorch's order (descending probability).
    const auto top_i = fx.get_int("top_i");
    const auto& p = L.layer->plan();
    for (int64_t r = 0; r < p.rows(); ++r) {
        int64_t e = 0;
        while (p.offsets[e + 1] <= r) ++e;
        EXPECT_EQ(top_i[size_t(p.row_choice[r])], e);
    }
    EXPECT_TRUE((test::all_close<R, double>(dx, fx.get("dx"), tol, tol))) << "dx";
    EXPECT_TRUE(test::all_close(L.grad("router.w"), fx.get("dw"), tol, tol)) << "dw";
    EXPECT_TRUE(test::all_close(L.grad("router.b"), fx.get("db"), tol, tol)) << "db";
    EXPECT_TRUE(test::all_close(L.grad("experts.w1"), fx.get("dw1"), tol, tol)) << "dw1";
    EXPECT_TRUE(test::all_close(L.grad("experts.w3"), fx.get("dw3"), tol, tol)) << "dw3";
    EXPECT_TRUE(test::all_close(L.grad("experts.w2"), fx.get("dw2"), tol, tol)) << "dw2";
}

TEST(MoeLayer, MixtralFormMatchesTorchInDouble) {
    check_mixtral_fixture<double>(1e-12);
}
TEST(MoeLayer, MixtralFormMatchesTorchInFloat) {
    check_mixtral_fixture<float>(2e-5);
}

// ---- MoeConfig ----

TEST(MoeConfig, ReadsEveryKeyFromASection) {
    io::Config conf(R"({"model": {"moe": {
        "router": "softmax_topk", "n_experts": 16, "top_k": 4, "d_expert": 96, "expert": "gelu",
        "renormalize": false, "softmax_after_topk": true, "capacity_factor": 1.25,
        "drop_policy": "position", "n_shared": 2, "d_shared": 64, "shared_gate": true,
        "aux_loss_coef": 0.02, "z_loss_coef": 0.001, "importance_coef": 0.1, "load_coef": 0.2,
        "jitter": 0.01, "bias_update_rate": 0.002, "route_scale": 2.5, "n_groups": 4,
        "topk_groups": 2, "domain_experts": [[0, 1], [2], [3, 4, 5]], "assign_loss_coef": 0.5,
        "slots_per_expert": 3}}})",
                    "test.json");
    const MoeConfig m = moe_config_from(conf, "model.moe");
    conf.finish();  // every key was read
    EXPECT_EQ(m.router, "softmax_topk");
    EXPECT_EQ(m.n_experts, 16);
    EXPECT_EQ(m.top_k, 4);
    EXPECT_EQ(m.d_expert, 96);
    EXPECT_EQ(m.expert, ExpertKind::gelu);
    EXPECT_FALSE(m.softmax_topk.renormalize);
    EXPECT_TRUE(m.softmax_topk.softmax_after_topk);
    EXPECT_EQ(m.capacity_factor, 1.25);
    EXPECT_EQ(m.drop_policy, DropPolicy::position);
    EXPECT_EQ(m.n_shared, 2);
    EXPECT_EQ(m.d_shared, 64);
    EXPECT_TRUE(m.shared_gate);
    EXPECT_EQ(m.aux_loss_coef, 0.02);
    EXPECT_EQ(m.z_loss_coef, 0.001);
    EXPECT_EQ(m.importance_coef, 0.1);
    EXPECT_EQ(m.noisy_topk.load_coef, 0.2);
    EXPECT_EQ(m.jitter, 0.01);
    EXPECT_EQ(m.sigmoid_bias.bias_update_rate, 0.002);
    EXPECT_EQ(m.sigmoid_bias.route_scale, 2.5);
    EXPECT_EQ(m.sigmoid_bias.n_groups, 4);
    EXPECT_EQ(m.sigmoid_bias.topk_groups, 2);
    EXPECT_EQ(m.assigned.domain_experts,
              (std::vector<std::vector<int64_t>>{{0, 1}, {2}, {3, 4, 5}}));
    EXPECT_EQ(m.assigned.assign_loss_coef, 0.5);
    EXPECT_EQ(m.soft.slots_per_expert, 3);
    // Absent keys keep the defaults.
    io::Config empty("{}", "empty.json");
    const MoeConfig d = moe_config_from(empty, "moe");
    EXPECT_EQ(d.n_experts, MoeConfig{}.n_experts);
    EXPECT_EQ(d.router, "softmax_topk");
}

std::string error_of(const std::string& json, const std::string& section = "moe") {
    try {
        io::Config conf(json, "c.json");
        moe_config_from(conf, section);
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(MoeConfig, ErrorsNameTheOption) {
    EXPECT_EQ(error_of(R"({"moe": {"n_experts": 8, "top_k": 9}})"),
              "c.json: moe.top_k (9) must be <= moe.n_experts (8)");
    EXPECT_EQ(error_of(R"({"m": {"n_experts": 8, "top_k": 9}})", "m"),
              "c.json: m.top_k (9) must be <= m.n_experts (8)");
    EXPECT_NE(error_of(R"({"moe": {"expert": "tanh"}})")
                  .find("'moe.expert' must be \"swiglu\", \"gelu\" or \"relu\""),
              std::string::npos);
    EXPECT_NE(error_of(R"({"moe": {"drop_policy": "random"}})").find("moe.drop_policy"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"moe": {"capacity_factor": -1}})").find("moe.capacity_factor (-1)"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"moe": {"jitter": 1.5}})").find("moe.jitter"), std::string::npos);
    EXPECT_NE(error_of(R"({"moe": {"n_experts": 8, "n_groups": 3}})")
                  .find("moe.n_groups (3) must divide"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"moe": {"domain_experts": [[0], [9]]}})").find("moe.domain_experts[1]"),
              std::string::npos);
    EXPECT_NE(
        error_of(R"({"moe": {"domain_experts": [0, 1]}})").find("a list of lists of integers"),
        std::string::npos);
    EXPECT_NE(error_of(R"({"moe": {"top_k": "two"}})").find("'moe.top_k' must be an integer"),
              std::string::npos);
    MoeConfig c;
    c.aux_loss_coef = -0.1;
    EXPECT_THROW(c.validate(), Error);
}

}  // namespace
}  // namespace moe::sparse

namespace moe::sparse {
namespace {

TEST(MoeConfig, CausalModelsRefuseDroppingByProbability) {
    MoeConfig c = small_config(4, 2);
    c.capacity_factor = 1.0;
    c.causal = true;
    EXPECT_TRUE(test::throws_error_with([&] { c.validate(); }, {"moe.drop_policy", "causal"}));
    c.drop_policy = DropPolicy::position;
    c.validate();  // by position: a token only competes with earlier ones
}

TEST(MoeConfig, AssignedNeedsTopKExpertsPerDomain) {
    MoeConfig c = small_config(4, 2);
    c.router = "assigned";
    c.assigned.domain_experts = {{0, 1}, {2}};
    EXPECT_TRUE(
        test::throws_error_with([&] { c.validate(); }, {"moe.domain_experts[1]", "moe.top_k"}));
}

}  // namespace
}  // namespace moe::sparse
