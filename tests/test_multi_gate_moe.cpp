// MultiGateMoe (MMoE): forward against a plain double reference (per-task softmax gates
// written as loops, the experts through the naive dense reference), dense and top-k; every
// gradient (every task's gate, the experts, the input) by finite differences; each expert
// runs once per token however many tasks keep it; float against double; parallel sizes
// against the reference and 1 thread; PyTorch (dense and top-2, outputs and every
// gradient); and the errors.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/threads.h"
#include "moe/multi_gate_moe.h"
#include "moe_reference.h"
#include "test_support.h"

namespace moe {
namespace {

using sparse::MoeConfig;

MoeConfig mmoe_cfg(int64_t E, int64_t d, int64_t H,
                   sparse::ExpertKind kind = sparse::ExpertKind::swiglu) {
    MoeConfig c;
    c.n_experts = E;
    c.d_model = d;
    c.d_expert = H;
    c.expert = kind;
    return c;
}

template <class R>
struct MmoeRig {
    MoeConfig cfg;
    int64_t K, top_k;
    sparse::MultiGateMoe<R> mmoe;
    Arena params, grads, acts;
    const std::string prefix = "towers.mmoe.";

    MmoeRig(const MoeConfig& c, int64_t tasks, int64_t max_tokens, int64_t k, double std = 0.7)
        : cfg(c), K(tasks), top_k(k), mmoe(c, tasks, max_tokens, k) {
        mmoe.declare(params, acts, prefix);
        params.allocate();
        grads = params.clone_layout();
        acts.allocate();
        mmoe.bind(params, grads, acts);
        Rng rng(23);
        mmoe.init_weights(rng, std, 0.5);
        // Non-zero biases, so their gradients are checked on a generic point.
        for (int64_t k2 = 0; k2 < K; ++k2) {
            const auto b = test::random_normal(size_t(c.n_experts), 90 + uint64_t(k2), 0.3);
            R* p = param("gate." + std::to_string(k2) + ".b");
            for (size_t i = 0; i < b.size(); ++i) p[i] = R(b[i]);
        }
    }
    R* param(const std::string& n) { return params.get(prefix + n).template ptr<R>(); }
    int64_t numel(const std::string& n) { return params.get(prefix + n).numel(); }
    std::vector<double> grad(const std::string& n) {
        return sparse::reference::tensor_as_f64(grads, prefix + n);
    }
    std::vector<std::string> names() const {
        std::vector<std::string> n = {"experts.w1", "experts.w2"};
        if (cfg.expert == sparse::ExpertKind::swiglu) n.push_back("experts.w3");
        for (int64_t k = 0; k < K; ++k) {
            n.push_back("gate." + std::to_string(k) + ".w");
            n.push_back("gate." + std::to_string(k) + ".b");
        }
        return n;
    }
};

// The plain reference: for each task, logits by loops, the kept set (top_k largest logits,
// ties to the lower expert; all with top_k = 0), softmax over the kept ones, then
// out_k = sum_e g_k[t, e] expert_e(x_t) from the naive dense reference. Also returns the
// union size: sum over tokens of the experts some task kept.
struct Ref {
    std::vector<std::vector<double>> outs, gates;  // [K][T, d], [K][T, E]
    int64_t union_rows = 0;
};
Ref reference_mmoe(const MoeConfig& c, int64_t K, int64_t top_k, const Arena& params,
                   const std::string& prefix, const std::vector<double>& x, int64_t T) {
    const int64_t E = c.n_experts, d = c.d_model;
    const auto model = sparse::reference::model_from(params, prefix, c);
    Ref r;
    std::vector<int> used(size_t(T * E), 0);
    for (int64_t k = 0; k < K; ++k) {
        const std::string g = prefix + "gate." + std::to_string(k) + ".";
        const auto w = sparse::reference::tensor_as_f64(params, g + "w");
        const auto b = sparse::reference::tensor_as_f64(params, g + "b");
        std::vector<double> gate(size_t(T * E), 0.0);
        for (int64_t t = 0; t < T; ++t) {
            std::vector<double> lg(static_cast<size_t>(E));
            for (int64_t e = 0; e < E; ++e) {
                double s = b[size_t(e)];
                for (int64_t i = 0; i < d; ++i) s += w[size_t(e * d + i)] * x[size_t(t * d + i)];
                lg[size_t(e)] = s;
            }
            std::vector<int64_t> order(static_cast<size_t>(E));
            for (int64_t e = 0; e < E; ++e) order[size_t(e)] = e;
            std::stable_sort(order.begin(), order.end(),
                             [&](int64_t a, int64_t b2) { return lg[size_t(a)] > lg[size_t(b2)]; });
            const int64_t keep = top_k == 0 ? E : top_k;
            double sum = 0;
            for (int64_t j = 0; j < keep; ++j) sum += std::exp(lg[size_t(order[size_t(j)])]);
            for (int64_t j = 0; j < keep; ++j) {
                const int64_t e = order[size_t(j)];
                gate[size_t(t * E + e)] = std::exp(lg[size_t(e)]) / sum;
                used[size_t(t * E + e)] = 1;
            }
        }
        r.outs.push_back(sparse::reference::forward(model, x, T, gate));
        r.gates.push_back(gate);
    }
    for (int u : used) r.union_rows += u;
    return r;
}

struct Case {
    int64_t T, E, K, top_k;
    sparse::ExpertKind kind;
};
const Case kCases[] = {{5, 4, 2, 0, sparse::ExpertKind::swiglu},
                       {6, 4, 3, 1, sparse::ExpertKind::swiglu},
                       {7, 5, 2, 2, sparse::ExpertKind::gelu},
                       {4, 3, 1, 0, sparse::ExpertKind::gelu},
                       {1, 2, 2, 1, sparse::ExpertKind::swiglu}};

std::string name_of(const Case& c) {
    return "T=" + std::to_string(c.T) + " E=" + std::to_string(c.E) + " K=" + std::to_string(c.K) +
           " top_k=" + std::to_string(c.top_k);
}

TEST(MultiGateMoe, ForwardMatchesPlainReference) {
    const int64_t d = 4, H = 3;
    for (const Case& fc : kCases) {
        SCOPED_TRACE(name_of(fc));
        const MoeConfig c = mmoe_cfg(fc.E, d, H, fc.kind);
        MmoeRig<double> rig(c, fc.K, fc.T + 2, fc.top_k);
        const auto x = test::random_normal(size_t(fc.T * d), 5 + uint64_t(fc.T));
        std::vector<std::vector<double>> outs(size_t(fc.K),
                                              std::vector<double>(size_t(fc.T * d), NAN));
        std::vector<double*> ptrs;
        for (auto& o : outs) ptrs.push_back(o.data());
        rig.mmoe.forward(ptrs.data(), x.data(), fc.T);
        const Ref ref = reference_mmoe(c, fc.K, fc.top_k, rig.params, rig.prefix, x, fc.T);
        for (int64_t k = 0; k < fc.K; ++k) {
            EXPECT_TRUE(test::all_close(outs[size_t(k)], ref.outs[size_t(k)], 1e-13, 1e-11))
                << "task " << k;
            const std::vector<double> g(rig.mmoe.gate(k), rig.mmoe.gate(k) + fc.T * fc.E);
            EXPECT_TRUE(test::all_close(g, ref.gates[size_t(k)], 1e-14, 1e-12)) << "gate " << k;
        }
        // Every expert ran once per token that some task kept it for, not once per task.
        EXPECT_EQ(rig.mmoe.rows(), ref.union_rows);
        if (fc.top_k == 0) {
            EXPECT_EQ(rig.mmoe.rows(), fc.T * fc.E);
        }
    }
}

TEST(MultiGateMoe, TopKRunsTheUnionOnceNotOncePerTask) {
    // Two tasks with identical gates keep the same experts: the rows are T * top_k, not
    // 2 * T * top_k, and both tasks' outputs are equal.
    const int64_t T = 6, E = 5, d = 4, H = 3, k = 2;
    MmoeRig<double> rig(mmoe_cfg(E, d, H), 2, T, k);
    std::copy(rig.param("gate.0.w"), rig.param("gate.0.w") + E * d, rig.param("gate.1.w"));
    std::copy(rig.param("gate.0.b"), rig.param("gate.0.b") + E, rig.param("gate.1.b"));
    const auto x = test::random_normal(size_t(T * d), 8);
    std::vector<double> o0(size_t(T * d)), o1(size_t(T * d));
    double* outs[] = {o0.data(), o1.data()};
    rig.mmoe.forward(outs, x.data(), T);
    EXPECT_EQ(rig.mmoe.rows(), T * k);
    EXPECT_EQ(o0, o1);
}

TEST(MultiGateMoe, GradientsMatchFiniteDifferences) {
    const int64_t d = 4, H = 3;
    for (const Case& fc : kCases) {
        SCOPED_TRACE(name_of(fc));
        MmoeRig<double> rig(mmoe_cfg(fc.E, d, H, fc.kind), fc.K, fc.T, fc.top_k);
        auto x = test::random_normal(size_t(fc.T * d), 11 + uint64_t(fc.T));
        std::vector<std::vector<double>> outs, u;
        std::vector<double*> out_ptrs;
        std::vector<const double*> u_ptrs;
        for (int64_t k = 0; k < fc.K; ++k) {
            outs.emplace_back(size_t(fc.T * d));
            u.push_back(test::random_normal(size_t(fc.T * d), 40 + uint64_t(k)));
        }
        for (int64_t k = 0; k < fc.K; ++k) {
            out_ptrs.push_back(outs[size_t(k)].data());
            u_ptrs.push_back(u[size_t(k)].data());
        }
        auto loss = [&] {
            rig.mmoe.forward(out_ptrs.data(), x.data(), fc.T);
            double s = 0;
            for (int64_t k = 0; k < fc.K; ++k)
                s += test::weighted_sum(outs[size_t(k)], u[size_t(k)]);
            return s;
        };
        loss();
        rig.grads.zero();
        std::vector<double> dx(x.size(), 0.0);
        rig.mmoe.backward(u_ptrs.data(), dx.data());
        // The kept sets are piecewise constant: h = 1e-6 stays inside one piece here.
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

TEST(MultiGateMoe, FloatMatchesDouble) {
    const int64_t T = 64, E = 6, K = 3, d = 16, H = 24;
    for (const int64_t k : {int64_t(0), int64_t(2)}) {
        SCOPED_TRACE("top_k=" + std::to_string(k));
        const MoeConfig c = mmoe_cfg(E, d, H);
        MmoeRig<double> rd(c, K, T, k, 0.3);
        MmoeRig<float> rf(c, K, T, k, 0.3);
        for (const auto& n : rd.names())
            for (int64_t i = 0; i < rd.numel(n); ++i) rf.param(n)[i] = float(rd.param(n)[i]);
        const auto x = test::random_normal(size_t(T * d), 3);
        const auto xf = test::to_f32(x);
        std::vector<std::vector<double>> od(size_t(K), std::vector<double>(size_t(T * d))), ud;
        std::vector<std::vector<float>> of(size_t(K), std::vector<float>(size_t(T * d))), uf;
        std::vector<double*> pd;
        std::vector<float*> pf;
        std::vector<const double*> qd;
        std::vector<const float*> qf;
        for (int64_t t = 0; t < K; ++t) {
            ud.push_back(test::random_normal(size_t(T * d), 60 + uint64_t(t)));
            uf.push_back(test::to_f32(ud.back()));
        }
        for (int64_t t = 0; t < K; ++t) {
            pd.push_back(od[size_t(t)].data());
            pf.push_back(of[size_t(t)].data());
            qd.push_back(ud[size_t(t)].data());
            qf.push_back(uf[size_t(t)].data());
        }
        rd.mmoe.forward(pd.data(), x.data(), T);
        rf.mmoe.forward(pf.data(), xf.data(), T);
        std::vector<double> dxd(size_t(T * d), 0.0);
        std::vector<float> dxf(size_t(T * d), 0.0f);
        rd.mmoe.backward(qd.data(), dxd.data());
        rf.mmoe.backward(qf.data(), dxf.data());
        const double tol = 300 * std::numeric_limits<float>::epsilon();
        for (int64_t t = 0; t < K; ++t)
            EXPECT_TRUE(test::all_close(test::to_f64(of[size_t(t)]), od[size_t(t)], tol, tol));
        EXPECT_TRUE(test::all_close(test::to_f64(dxf), dxd, tol, tol));
        for (const auto& n : rd.names())
            EXPECT_TRUE(test::all_close(rf.grad(n), rd.grad(n), tol, tol)) << n;
    }
}

// At a size where the gate, row-weight and d_ys loops run in parallel: the forward against
// the plain reference, and every result of 2 threads against 1 thread.
TEST(MultiGateMoe, ParallelSizesMatchTheReferenceAndOneThread) {
    const int64_t T = 2000, E = 8, K = 3, d = 8, H = 6, top_k = 3;
    const MoeConfig c = mmoe_cfg(E, d, H);
    const auto x = test::random_normal(size_t(T * d), 21);
    std::vector<std::vector<double>> u;
    for (int64_t k = 0; k < K; ++k)
        u.push_back(test::random_normal(size_t(T * d), 30 + uint64_t(k)));
    struct Run {
        std::vector<std::vector<double>> outs, grads;
        std::vector<double> dx;
    };
    auto run = [&](int threads) {
        const int before = num_threads();
        set_num_threads(threads);
        MmoeRig<double> rig(c, K, T, top_k, 0.5);
        Run r;
        r.outs.assign(size_t(K), std::vector<double>(size_t(T * d)));
        std::vector<double*> po;
        std::vector<const double*> pu;
        for (int64_t k = 0; k < K; ++k) {
            po.push_back(r.outs[size_t(k)].data());
            pu.push_back(u[size_t(k)].data());
        }
        rig.mmoe.forward(po.data(), x.data(), T);
        r.dx.assign(x.size(), 0.0);
        rig.mmoe.backward(pu.data(), r.dx.data());
        for (const auto& n : rig.names()) r.grads.push_back(rig.grad(n));
        if (threads == 2) {
            const Ref ref = reference_mmoe(c, K, top_k, rig.params, rig.prefix, x, T);
            for (int64_t k = 0; k < K; ++k)
                EXPECT_TRUE(test::all_close(r.outs[size_t(k)], ref.outs[size_t(k)], 1e-13, 1e-11));
            EXPECT_EQ(rig.mmoe.rows(), ref.union_rows);
            EXPECT_GE(rig.mmoe.rows(), 8192);  // the row-weight loop's parallel threshold
        }
        set_num_threads(before);
        return r;
    };
    const Run one = run(1), two = run(2);
    for (int64_t k = 0; k < K; ++k)
        EXPECT_TRUE(test::all_close(two.outs[size_t(k)], one.outs[size_t(k)], 1e-14, 1e-12));
    EXPECT_TRUE(test::all_close(two.dx, one.dx, 1e-14, 1e-12));
    for (size_t i = 0; i < one.grads.size(); ++i)
        EXPECT_TRUE(test::all_close(two.grads[i], one.grads[i], 1e-14, 1e-12)) << i;
}

// Dense and top-2 gating against PyTorch (gen_multi_gate_moe.py): every task's output and
// every gradient, on the double path and the float path.
template <class R>
void check_against_pytorch(const test::Fixture& fx, const std::string& pre, int64_t top_k,
                           double tol) {
    const auto sz = fx.get_int("sizes");
    const int64_t T = sz[0], d = sz[1], E = sz[2], K = sz[3], H = sz[4];
    MmoeRig<R> rig(mmoe_cfg(E, d, H), K, T, top_k);
    auto set = [&](const std::string& n, const std::vector<double>& v, int64_t from) {
        for (int64_t i = 0; i < rig.numel(n); ++i) rig.param(n)[i] = R(v[size_t(from + i)]);
    };
    const auto gw = fx.get("gate_w"), gb = fx.get("gate_b");
    for (int64_t k = 0; k < K; ++k) {
        set("gate." + std::to_string(k) + ".w", gw, k * E * d);
        set("gate." + std::to_string(k) + ".b", gb, k * E);
    }
    set("experts.w1", fx.get("w1"), 0);
    set("experts.w3", fx.get("w3"), 0);
    set("experts.w2", fx.get("w2"), 0);
    const auto x64 = fx.get("x"), dy64 = fx.get("dy"), y64 = fx.get(pre + "y");
    const std::vector<R> x(x64.begin(), x64.end()), dy(dy64.begin(), dy64.end());
    std::vector<R> y(size_t(K * T * d), R(NAN)), dx(size_t(T * d), R(0));
    std::vector<R*> outs;
    std::vector<const R*> d_outs;
    for (int64_t k = 0; k < K; ++k) {
        outs.push_back(y.data() + k * T * d);
        d_outs.push_back(dy.data() + k * T * d);
    }
    rig.mmoe.forward(outs.data(), x.data(), T);
    rig.mmoe.backward(d_outs.data(), dx.data());
    EXPECT_TRUE(test::all_close(std::vector<double>(y.begin(), y.end()), y64, tol, tol)) << "y";
    EXPECT_TRUE(
        test::all_close(std::vector<double>(dx.begin(), dx.end()), fx.get(pre + "dx"), tol, tol))
        << "dx";
    const auto dgw = fx.get(pre + "dgate_w"), dgb = fx.get(pre + "dgate_b");
    for (int64_t k = 0; k < K; ++k) {
        const std::string g = "gate." + std::to_string(k) + ".";
        EXPECT_TRUE(test::all_close(
            rig.grad(g + "w"),
            std::vector<double>(dgw.begin() + k * E * d, dgw.begin() + (k + 1) * E * d), tol, tol))
            << g << "w";
        EXPECT_TRUE(test::all_close(
            rig.grad(g + "b"), std::vector<double>(dgb.begin() + k * E, dgb.begin() + (k + 1) * E),
            tol, tol))
            << g << "b";
    }
    for (const std::string w : {"w1", "w3", "w2"})
        EXPECT_TRUE(test::all_close(rig.grad("experts." + w), fx.get(pre + "d" + w), tol, tol))
            << w;
}

TEST(MultiGateMoe, MatchesPyTorchForwardAndEveryGradient) {
    test::Fixture fx("multi_gate_moe");
    for (const auto& [pre, k] : {std::pair<std::string, int64_t>{"", 0}, {"topk_", 2}}) {
        SCOPED_TRACE("top_k=" + std::to_string(k));
        check_against_pytorch<double>(fx, pre, k, 1e-12);
        check_against_pytorch<float>(fx, pre, k, 300 * std::numeric_limits<float>::epsilon());
    }
}

TEST(MultiGateMoe, ErrorsNameTheOpAndTheShapes) {
    const MoeConfig c = mmoe_cfg(4, 4, 3);
    EXPECT_TRUE(test::throws_error_with([&] { sparse::MultiGateMoe<double> m(c, 0, 8); },
                                        {"MultiGateMoe", "n_tasks=0"}));
    EXPECT_TRUE(test::throws_error_with([&] { sparse::MultiGateMoe<double> m(c, 2, 8, 5); },
                                        {"MultiGateMoe", "top_k=5", "n_experts=4"}));
    EXPECT_TRUE(test::throws_error_with([&] { sparse::MultiGateMoe<double> m(c, 2, 8, -1); },
                                        {"MultiGateMoe", "top_k=-1"}));
    EXPECT_TRUE(test::throws_error_with([&] { sparse::MultiGateMoe<double> m(c, 2, 0); },
                                        {"MultiGateMoe", "max_tokens=0"}));
    MmoeRig<double> rig(c, 2, 8, 0);
    std::vector<double> x(size_t(9 * 4), 0.5), o0(x.size()), o1(x.size());
    double* outs[] = {o0.data(), o1.data()};
    EXPECT_TRUE(test::throws_error_with([&] { rig.mmoe.forward(outs, x.data(), 9); },
                                        {"MultiGateMoe::forward", "T=9", "d=4", "max_tokens=8"}));
    double* missing[] = {o0.data(), nullptr};
    EXPECT_TRUE(test::throws_error_with([&] { rig.mmoe.forward(missing, x.data(), 3); },
                                        {"MultiGateMoe::forward", "output 1"}));
    rig.mmoe.forward(outs, x.data(), 3);
    rig.grads.zero();
    const double* d_missing[] = {o0.data(), nullptr};
    std::vector<double> dx(x.size(), 0.0);
    EXPECT_TRUE(test::throws_error_with([&] { rig.mmoe.backward(d_missing, dx.data()); },
                                        {"MultiGateMoe::backward", "output gradient 1"}));
    EXPECT_EQ(rig.grad("gate.0.w"), std::vector<double>(size_t(4 * 4), 0.0));
}

}  // namespace
}  // namespace moe
