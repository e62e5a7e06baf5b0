// Soft MoE: forward and every gradient against PyTorch (per-sequence groups and one group),
// on the double and float paths; every gradient by finite differences (SwiGLU and GELU
// experts, one and several slots, one and several groups); a naive reference over the size
// sweep (dispatch columns and combine rows sum to 1); groups do not see each other; and the
// causal refusal.
#include <cmath>
#include <limits>
#include <string>

#include "moe/moe_layer.h"
#include "moe/soft_moe.h"
#include "moe/soft_moe_layer.h"
#include "moe_reference.h"
#include "test_support.h"

namespace moe {
namespace {

using sparse::MoeConfig;

constexpr double kEpsF = std::numeric_limits<float>::epsilon();

MoeConfig soft_cfg(int64_t E, int64_t S, int64_t d, int64_t H,
                   sparse::ExpertKind kind = sparse::ExpertKind::swiglu) {
    MoeConfig c;
    c.router = "soft";
    c.causal = false;
    c.n_experts = E;
    c.top_k = 1;
    c.soft.slots_per_expert = S;
    c.d_model = d;
    c.d_expert = H;
    c.expert = kind;
    return c;
}

template <class R>
struct SoftRig {
    MoeConfig cfg;
    sparse::SoftMoe<R> soft;
    Arena params, grads, acts;
    const std::string prefix = "layers.4.moe.";

    SoftRig(const MoeConfig& c, int64_t max_tokens, int64_t seq_len, double std = 0.5)
        : cfg(c), soft(c, max_tokens, seq_len) {
        soft.declare(params, acts, prefix);
        params.allocate();
        grads = params.clone_layout();
        acts.allocate();
        soft.bind(params, grads, acts);
        Rng rng(17);
        soft.init_weights(rng, std, 0.4);
    }
    R* param(const std::string& n) { return params.get(prefix + n).template ptr<R>(); }
    int64_t numel(const std::string& n) { return params.get(prefix + n).numel(); }
    std::vector<double> grad(const std::string& n) {
        return sparse::reference::tensor_as_f64(grads, prefix + n);
    }
    void set(const std::string& n, const std::vector<double>& v) {
        ASSERT_EQ(int64_t(v.size()), numel(n)) << n;
        for (size_t i = 0; i < v.size(); ++i) param(n)[i] = R(v[i]);
    }
    std::vector<std::string> names() const {
        std::vector<std::string> n = {"router.phi", "experts.w1", "experts.w2"};
        if (cfg.expert == sparse::ExpertKind::swiglu) n.push_back("experts.w3");
        return n;
    }
};

// Soft MoE written naively: per group, logits, both softmaxes by explicit loops, slots, the
// reference experts (one slot at a time through a one-hot gate), and the combine.
struct NaiveSoft {
    std::vector<double> out, D, C;  // [T, d], [T, n], [T, n]
};
NaiveSoft naive_soft(const MoeConfig& c, const Arena& params, const std::string& prefix,
                     const std::vector<double>& x, int64_t T, int64_t L) {
    const int64_t E = c.n_experts, S = c.soft.slots_per_expert, n = E * S, d = c.d_model;
    const auto phi = sparse::reference::tensor_as_f64(params, prefix + "router.phi");
    MoeConfig routed = c;  // the experts alone: shared experts are not part of Soft MoE
    routed.n_shared = 0;
    const auto model = sparse::reference::model_from(params, prefix, routed);
    NaiveSoft r;
    r.out.assign(size_t(T * d), 0.0);
    r.D.assign(size_t(T * n), 0.0);
    r.C.assign(size_t(T * n), 0.0);
    for (int64_t g = 0; g < T / L; ++g) {
        std::vector<double> lg(size_t(L * n), 0.0);
        for (int64_t t = 0; t < L; ++t)
            for (int64_t j = 0; j < n; ++j)
                for (int64_t i = 0; i < d; ++i)
                    lg[size_t(t * n + j)] +=
                        x[size_t((g * L + t) * d + i)] * phi[size_t(i * n + j)];
        for (int64_t j = 0; j < n; ++j) {  // columns: over tokens
            double s = 0;
            for (int64_t t = 0; t < L; ++t) s += std::exp(lg[size_t(t * n + j)]);
            for (int64_t t = 0; t < L; ++t)
                r.D[size_t((g * L + t) * n + j)] = std::exp(lg[size_t(t * n + j)]) / s;
        }
        for (int64_t t = 0; t < L; ++t) {  // rows: over slots
            double s = 0;
            for (int64_t j = 0; j < n; ++j) s += std::exp(lg[size_t(t * n + j)]);
            for (int64_t j = 0; j < n; ++j)
                r.C[size_t((g * L + t) * n + j)] = std::exp(lg[size_t(t * n + j)]) / s;
        }
        std::vector<double> slots(size_t(n * d), 0.0), onehot(size_t(n * E), 0.0);
        for (int64_t j = 0; j < n; ++j) {
            onehot[size_t(j * E + j / S)] = 1.0;
            for (int64_t t = 0; t < L; ++t)
                for (int64_t i = 0; i < d; ++i)
                    slots[size_t(j * d + i)] +=
                        r.D[size_t((g * L + t) * n + j)] * x[size_t((g * L + t) * d + i)];
        }
        const auto Y = sparse::reference::forward(model, slots, n, onehot);
        for (int64_t t = 0; t < L; ++t)
            for (int64_t j = 0; j < n; ++j)
                for (int64_t i = 0; i < d; ++i)
                    r.out[size_t((g * L + t) * d + i)] +=
                        r.C[size_t((g * L + t) * n + j)] * Y[size_t(j * d + i)];
    }
    return r;
}

// ---- PyTorch ----

TEST(SoftMoe, MatchesPyTorchForwardAndEveryGradient) {
    test::Fixture fx("soft_moe");
    const auto sz = fx.get_int("sizes");
    const int64_t B = sz[0], L = sz[1], d = sz[2], E = sz[3], S = sz[4], H = sz[5], T = B * L;
    const MoeConfig c = soft_cfg(E, S, d, H);
    const auto x = fx.get("x"), dy = fx.get("dy");
    for (const std::string pre : {"", "one_"}) {
        SCOPED_TRACE(pre.empty() ? "one group per sequence" : "one group");
        SoftRig<double> rig(c, T, pre.empty() ? L : 0);
        rig.set("router.phi", fx.get("phi"));
        rig.set("experts.w1", fx.get("w1"));
        rig.set("experts.w3", fx.get("w3"));
        rig.set("experts.w2", fx.get("w2"));
        std::vector<double> y(size_t(T * d), NAN), dx(size_t(T * d), 0.0);
        rig.soft.forward(y.data(), x.data(), T);
        EXPECT_TRUE(test::all_close(y, fx.get(pre + "y"), 1e-13, 1e-11));
        rig.soft.backward(dy.data(), dx.data());
        EXPECT_TRUE(test::all_close(dx, fx.get(pre + "dx"), 1e-13, 1e-11)) << "dx";
        EXPECT_TRUE(test::all_close(rig.grad("router.phi"), fx.get(pre + "dphi"), 1e-13, 1e-11));
        EXPECT_TRUE(test::all_close(rig.grad("experts.w1"), fx.get(pre + "dw1"), 1e-13, 1e-11));
        EXPECT_TRUE(test::all_close(rig.grad("experts.w3"), fx.get(pre + "dw3"), 1e-13, 1e-11));
        EXPECT_TRUE(test::all_close(rig.grad("experts.w2"), fx.get(pre + "dw2"), 1e-13, 1e-11));

        // The float path on the same data.
        SoftRig<float> rf(c, T, pre.empty() ? L : 0);
        rf.set("router.phi", fx.get("phi"));
        rf.set("experts.w1", fx.get("w1"));
        rf.set("experts.w3", fx.get("w3"));
        rf.set("experts.w2", fx.get("w2"));
        const auto xf = test::to_f32(x), dyf = test::to_f32(dy);
        std::vector<float> yf(size_t(T * d), NAN), dxf(size_t(T * d), 0.0f);
        rf.soft.forward(yf.data(), xf.data(), T);
        rf.soft.backward(dyf.data(), dxf.data());
        const double tol = 200 * kEpsF;
        EXPECT_TRUE(test::all_close(test::to_f64(yf), fx.get(pre + "y"), tol, tol));
        EXPECT_TRUE(test::all_close(test::to_f64(dxf), fx.get(pre + "dx"), tol, tol));
        EXPECT_TRUE(test::all_close(rf.grad("router.phi"), fx.get(pre + "dphi"), tol, tol));
        EXPECT_TRUE(test::all_close(rf.grad("experts.w1"), fx.get(pre + "dw1"), tol, tol));
        EXPECT_TRUE(test::all_close(rf.grad("experts.w3"), fx.get(pre + "dw3"), tol, tol));
        EXPECT_TRUE(test::all_close(rf.grad("experts.w2"), fx.get(pre + "dw2"), tol, tol));
    }
}

// ---- finite differences ----

struct FdCase {
    int64_t T, L, E, S;
    sparse::ExpertKind kind;
};

TEST(SoftMoe, GradientsMatchFiniteDifferences) {
    const int64_t d = 4, H = 3;
    const FdCase cases[] = {
        {6, 3, 2, 2, sparse::ExpertKind::swiglu}, {7, 0, 1, 3, sparse::ExpertKind::gelu},
        {4, 1, 3, 1, sparse::ExpertKind::swiglu}, {8, 4, 3, 2, sparse::ExpertKind::gelu},
        {1, 0, 2, 1, sparse::ExpertKind::swiglu}, {6, 2, 2, 2, sparse::ExpertKind::relu}};
    for (const FdCase& fc : cases) {
        SCOPED_TRACE("T=" + std::to_string(fc.T) + " L=" + std::to_string(fc.L) +
                     " E=" + std::to_string(fc.E) + " S=" + std::to_string(fc.S));
        SoftRig<double> rig(soft_cfg(fc.E, fc.S, d, H, fc.kind), fc.T, fc.L, 0.8);
        auto x = test::random_normal(size_t(fc.T * d), 3 + uint64_t(fc.T));
        const auto u = test::random_normal(size_t(fc.T * d), 4);
        std::vector<double> out(size_t(fc.T * d));
        auto loss = [&] {
            rig.soft.forward(out.data(), x.data(), fc.T);
            return test::weighted_sum(out, u);
        };
        loss();
        rig.grads.zero();
        std::vector<double> dx(x.size(), 0.0);
        rig.soft.backward(u.data(), dx.data());
        EXPECT_TRUE(
            test::all_close(dx, test::numeric_gradient(loss, x.data(), x.size()), 1e-8, 1e-6))
            << "dx";
        for (const auto& n : rig.names())
            EXPECT_TRUE(test::all_close(
                rig.grad(n), test::numeric_gradient(loss, rig.param(n), size_t(rig.numel(n))), 1e-8,
                1e-6))
                << n;
    }
}

TEST(SoftMoe, BackwardAccumulates) {
    SoftRig<double> rig(soft_cfg(2, 2, 4, 3), 6, 3);
    const auto x = test::random_normal(24, 1), u = test::random_normal(24, 2);
    std::vector<double> out(24), dx1(24, 0.0), dx2(24, 0.0);
    rig.soft.forward(out.data(), x.data(), 6);
    rig.soft.backward(u.data(), dx1.data());
    const auto g1 = rig.grad("router.phi");
    rig.soft.backward(u.data(), dx2.data());
    rig.soft.backward(u.data(), dx2.data());
    for (auto& v : dx1) v *= 2;
    EXPECT_TRUE(test::all_close(dx2, dx1, 1e-14, 1e-13));
    auto g3 = rig.grad("router.phi");
    for (size_t i = 0; i < g3.size(); ++i) EXPECT_NEAR(g3[i], 3 * g1[i], 1e-13);
}

// ---- the sweep against the naive form ----

TEST(SoftMoe, MatchesTheNaiveFormOverTheSweep) {
    const int64_t d = 4, H = 3;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64})
            for (int64_t L : {int64_t(0), T > 1 && T % 2 == 0 ? T / 2 : T}) {
                SCOPED_TRACE("T=" + std::to_string(T) + " E=" + std::to_string(E) +
                             " L=" + std::to_string(L));
                const int64_t S = E <= 2 ? 2 : 1, n = E * S;
                SoftRig<double> rig(soft_cfg(E, S, d, H), 64, L, 1.0);
                const auto x = test::random_normal(size_t(T * d), 5 + uint64_t(T));
                std::vector<double> out(size_t(T * d), NAN);
                rig.soft.forward(out.data(), x.data(), T);
                const auto want = naive_soft(rig.cfg, rig.params, rig.prefix, x, T, L > 0 ? L : T);
                EXPECT_TRUE(test::all_close(out, want.out, 1e-13, 1e-11));
                const std::vector<double> D(rig.soft.dispatch_weights(),
                                            rig.soft.dispatch_weights() + T * n);
                const std::vector<double> C(rig.soft.combine_weights(),
                                            rig.soft.combine_weights() + T * n);
                EXPECT_TRUE(test::all_close(D, want.D, 1e-15, 1e-13));
                EXPECT_TRUE(test::all_close(C, want.C, 1e-15, 1e-13));
                const int64_t Lg = L > 0 ? L : T;
                for (int64_t g = 0; g < T / Lg; ++g)
                    for (int64_t j = 0; j < n; ++j) {
                        double s = 0;
                        for (int64_t t = 0; t < Lg; ++t) s += D[size_t((g * Lg + t) * n + j)];
                        EXPECT_NEAR(s, 1.0, 1e-14);
                    }
                for (int64_t t = 0; t < T; ++t) {
                    double s = 0;
                    for (int64_t j = 0; j < n; ++j) s += C[size_t(t * n + j)];
                    EXPECT_NEAR(s, 1.0, 1e-14);
                }
                // Input and phi gradients by finite differences on every size (experts' by
                // the test above).
                if (T * E > 64 * 8) continue;
                auto xv = x;
                const auto u = test::random_normal(size_t(T * d), 6);
                auto loss = [&] {
                    rig.soft.forward(out.data(), xv.data(), T);
                    return test::weighted_sum(out, u);
                };
                loss();
                rig.grads.zero();
                std::vector<double> dx(x.size(), 0.0);
                rig.soft.backward(u.data(), dx.data());
                EXPECT_TRUE(test::all_close(dx, test::numeric_gradient(loss, xv.data(), xv.size()),
                                            1e-8, 1e-6));
                EXPECT_TRUE(test::all_close(rig.grad("router.phi"),
                                            test::numeric_gradient(loss, rig.param("router.phi"),
                                                                   size_t(rig.numel("router.phi"))),
                                            1e-8, 1e-6));
            }
}

TEST(SoftMoe, SequencesDoNotSeeEachOther) {
    const int64_t T = 8, L = 4, d = 4;
    SoftRig<double> rig(soft_cfg(2, 2, d, 3), T, L, 1.0);
    auto x = test::random_normal(size_t(T * d), 7);
    std::vector<double> a(size_t(T * d)), b(size_t(T * d));
    rig.soft.forward(a.data(), x.data(), T);
    for (int64_t i = L * d; i < T * d; ++i) x[size_t(i)] += 1.0;  // change sequence 1 only
    rig.soft.forward(b.data(), x.data(), T);
    for (int64_t i = 0; i < L * d; ++i) EXPECT_EQ(a[size_t(i)], b[size_t(i)]) << i;
    bool changed = false;
    for (int64_t i = L * d; i < T * d; ++i) changed |= a[size_t(i)] != b[size_t(i)];
    EXPECT_TRUE(changed);
    // T must be whole sequences.
    EXPECT_THROW(rig.soft.forward(a.data(), x.data(), 6), Error);
}

TEST(SoftMoeLayer, TheLayerDelegatesToSoftMoeWithSharedExperts) {
    const int64_t T = 5, d = 4, E = 3, S = 2;
    MoeConfig c = soft_cfg(E, S, d, 3);
    c.n_shared = 1;
    c.d_shared = 2;
    c.shared_gate = true;
    const std::string prefix = "layers.0.moe.";
    const auto block = sparse::make_moe_block<double>(c, 8);
    ASSERT_EQ(block->routing_plan(), nullptr);
    sparse::MoeBlock<double>& layer = *block;
    Arena params;
    layer.declare(params, prefix);
    params.allocate();
    Arena grads = params.clone_layout();
    layer.bind(params, grads);
    Rng rng(3);
    layer.init_weights(rng, 0.7, 0.5);
    Tensor gate = params.get(prefix + "shared.gate");  // init 0: make the gate do something
    const auto gv = test::random_normal(size_t(d), 4);
    std::copy(gv.begin(), gv.end(), gate.ptr<double>());
    auto x = test::random_normal(size_t(T * d), 5);
    std::vector<double> out(size_t(T * d), NAN);
    EXPECT_EQ(layer.forward(out.data(), x.data(), T), 0.0);
    // Soft MoE over the whole call (one group) plus the shared expert (a zero gate leaves
    // only the shared path in the reference).
    auto want = naive_soft(c, params, prefix, x, T, T).out;
    const auto model = sparse::reference::model_from(params, prefix, c);
    const auto shared =
        sparse::reference::forward(model, x, T, std::vector<double>(size_t(T * E), 0.0));
    for (size_t i = 0; i < want.size(); ++i) want[i] += shared[i];
    EXPECT_TRUE(test::all_close(out, want, 1e-13, 1e-11));
    EXPECT_EQ(layer.stats().tokens, T);
    EXPECT_EQ(layer.stats().tokens_per_expert, std::vector<int64_t>(size_t(E), S));
    EXPECT_EQ(layer.stats().load_imbalance, 1.0);

    const auto u = test::random_normal(size_t(T * d), 6);
    auto loss = [&] {
        layer.forward(out.data(), x.data(), T);
        return test::weighted_sum(out, u);
    };
    loss();
    grads.zero();
    std::vector<double> dx(x.size(), 0.0);
    layer.backward(u.data(), dx.data());
    EXPECT_TRUE(test::all_close(dx, test::numeric_gradient(loss, x.data(), x.size()), 1e-8, 1e-6));
    for (const Arena::Entry& e : params.entries()) {
        const auto g = sparse::reference::tensor_as_f64(grads, e.name);
        Tensor t = params.get(e.name);
        EXPECT_TRUE(test::all_close(
            g, test::numeric_gradient(loss, t.ptr<double>(), size_t(t.numel())), 1e-8, 1e-6))
            << e.name;
    }
}

TEST(SoftMoeLayer, TheLayerGroupsBySequenceLength) {
    const int64_t T = 8, L = 4, d = 4;
    const MoeConfig c = soft_cfg(2, 2, d, 3);
    const std::string prefix = "layers.0.moe.";
    sparse::SoftMoeLayer<double> layer(c, T, L);
    Arena params;
    layer.declare(params, prefix);
    params.allocate();
    Arena grads = params.clone_layout();
    layer.bind(params, grads);
    Rng rng(8);
    layer.init_weights(rng, 0.7, 0.5);
    const auto x = test::random_normal(size_t(T * d), 9);
    std::vector<double> out(size_t(T * d), NAN);
    layer.forward(out.data(), x.data(), T);
    EXPECT_TRUE(test::all_close(out, naive_soft(c, params, prefix, x, T, L).out, 1e-13, 1e-11));
    EXPECT_EQ(layer.stats().tokens_per_expert, std::vector<int64_t>(2, 2 * 2));  // 2 groups
}

TEST(SoftMoe, RefusesACausalModel) {
    MoeConfig c = soft_cfg(2, 1, 4, 3);
    c.causal = true;
    try {
        sparse::SoftMoe<float> s(c, 8);
        FAIL() << "soft accepted a causal model";
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("router 'soft'"), std::string::npos) << msg;
        EXPECT_NE(msg.find("cannot be used in a causal model"), std::string::npos) << msg;
    }
    try {
        sparse::make_moe_block<float>(c, 8);
        FAIL() << "the layer accepted soft in a causal model";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("cannot be used in a causal model"), std::string::npos)
            << e.what();
    }
}

}  // namespace
}  // namespace moe
