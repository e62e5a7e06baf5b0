// Two PLE levels (PleLayer with per_task_inputs): the second level's task experts and gates
// read the first level's task outputs and its shared experts the shared output. Every
// gradient through both levels by finite differences (dense and top-k gates), PyTorch
// (outputs and every gradient, double and float), that distinct inputs matter, and the
// errors of the single-input calls on a level that reads several.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "moe/ple_layer.h"
#include "moe_reference.h"
#include "test_support.h"

namespace moe {
namespace {

using sparse::MoeConfig;
using sparse::PleShape;

MoeConfig cfg_of(int64_t d, int64_t H, sparse::ExpertKind kind) {
    MoeConfig c;
    c.d_model = d;
    c.d_expert = H;
    c.expert = kind;
    return c;
}

// Level 0 reads x and has a shared output; level 1 reads level 0's K + 1 outputs.
template <class R>
struct TwoLevels {
    int64_t K, T, d;
    PleShape s0, s1;
    sparse::PleLayer<R> l0, l1;
    Arena params, grads, acts;
    std::vector<std::vector<R>> out0, out1;  // [K + 1][T * d], [K][T * d]

    TwoLevels(const MoeConfig& c, int64_t K_, int64_t Es, int64_t Et, int64_t T_, int64_t top_k)
        : K(K_),
          T(T_),
          d(c.d_model),
          s0{K_, Es, Et, true, false, top_k},
          s1{K_, Es, Et, false, true, top_k},
          l0(c, s0, T_),
          l1(c, s1, T_) {
        l0.declare(params, acts, "0.");
        l1.declare(params, acts, "1.");
        params.allocate();
        grads = params.clone_layout();
        acts.allocate();
        l0.bind(params, grads, acts);
        l1.bind(params, grads, acts);
        Rng rng(5);
        l0.init_weights(rng, 0.7, 0.5);
        l1.init_weights(rng, 0.7, 0.5);
        uint64_t seed = 90;
        for (const auto& e : params.entries())  // non-zero biases: a generic point
            if (e.name.ends_with(".b")) {
                const auto b = test::random_normal(size_t(e.shape.numel()), seed++, 0.3);
                for (size_t i = 0; i < b.size(); ++i) param(e.name)[i] = R(b[i]);
            }
        out0.assign(size_t(K + 1), std::vector<R>(size_t(T * d)));
        out1.assign(size_t(K), std::vector<R>(size_t(T * d)));
    }
    R* param(const std::string& n) { return params.get(n).template ptr<R>(); }

    void forward(const std::vector<R>& x) {
        std::vector<R*> o0, o1;
        std::vector<const R*> in;
        for (int64_t k = 0; k < K; ++k) o0.push_back(out0[size_t(k)].data());
        l0.forward(o0.data(), out0.back().data(), x.data(), T);
        for (auto& v : out0) in.push_back(v.data());
        for (auto& v : out1) o1.push_back(v.data());
        l1.forward(o1.data(), nullptr, in.data(), T);
    }
    void backward(const std::vector<std::vector<R>>& dy, std::vector<R>& dx) {
        std::vector<std::vector<R>> d_mid(size_t(K + 1), std::vector<R>(size_t(T * d), R(0)));
        std::vector<const R*> d1, d0;
        std::vector<R*> dm;
        for (auto& v : dy) d1.push_back(v.data());
        for (auto& v : d_mid) dm.push_back(v.data());
        l1.backward(d1.data(), nullptr, dm.data());
        for (int64_t k = 0; k < K; ++k) d0.push_back(d_mid[size_t(k)].data());
        l0.backward(d0.data(), d_mid.back().data(), dx.data());
    }
};

TEST(PleLevels, GradientsMatchFiniteDifferences) {
    struct Case {
        int64_t K, Es, Et, T, top_k;
        sparse::ExpertKind kind;
    };
    for (const Case& c : {Case{2, 1, 2, 4, 0, sparse::ExpertKind::swiglu},
                          Case{3, 2, 1, 3, 0, sparse::ExpertKind::gelu},
                          Case{2, 2, 2, 5, 2, sparse::ExpertKind::relu},
                          Case{2, 0, 2, 3, 0, sparse::ExpertKind::gelu}}) {
        SCOPED_TRACE("K=" + std::to_string(c.K) + " Es=" + std::to_string(c.Es) +
                     " Et=" + std::to_string(c.Et) + " top_k=" + std::to_string(c.top_k));
        TwoLevels<double> rig(cfg_of(4, 3, c.kind), c.K, c.Es, c.Et, c.T, c.top_k);
        auto x = test::random_normal(size_t(c.T * 4), 11);
        std::vector<std::vector<double>> u;
        for (int64_t k = 0; k < c.K; ++k)
            u.push_back(test::random_normal(size_t(c.T * 4), 40 + uint64_t(k)));
        auto loss = [&] {
            rig.forward(x);
            double s = 0;
            for (int64_t k = 0; k < c.K; ++k)
                s += test::weighted_sum(rig.out1[size_t(k)], u[size_t(k)]);
            return s;
        };
        loss();
        rig.grads.zero();
        std::vector<double> dx(x.size(), 0.0);
        rig.backward(u, dx);
        // Top-k: the kept sets must not change under the step (true for this seed).
        EXPECT_TRUE(
            test::all_close(dx, test::numeric_gradient(loss, x.data(), x.size()), 1e-8, 1e-6))
            << "dx";
        for (const auto& e : rig.params.entries())
            EXPECT_TRUE(test::all_close(
                sparse::reference::tensor_as_f64(rig.grads, e.name),
                test::numeric_gradient(loss, rig.param(e.name), size_t(e.shape.numel())), 1e-8,
                1e-6))
                << e.name;
    }
}

// Level 1 with per_task_inputs against the same level fed one input everywhere: task k's
// output changes when only task k's input or the shared one changes, and not otherwise.
TEST(PleLevels, EachGroupReadsItsOwnInput) {
    const int64_t K = 2, T = 3, d = 4;
    TwoLevels<double> rig(cfg_of(d, 3, sparse::ExpertKind::gelu), K, 1, 1, T, 0);
    std::vector<std::vector<double>> in;
    for (int64_t j = 0; j <= K; ++j)
        in.push_back(test::random_normal(size_t(T * d), 60 + uint64_t(j)));
    auto run = [&] {
        std::vector<const double*> ip;
        std::vector<double*> op;
        for (auto& v : in) ip.push_back(v.data());
        for (auto& v : rig.out1) op.push_back(v.data());
        rig.l1.forward(op.data(), nullptr, ip.data(), T);
        return rig.out1;
    };
    const auto base = run();
    in[1][0] += 0.5;  // task 1's input: task 0's output must not move
    const auto moved = run();
    EXPECT_EQ(moved[0], base[0]);
    EXPECT_NE(moved[1], base[1]);
    in[1][0] -= 0.5;
    in[K][0] += 0.5;  // the shared input: both tasks mix the shared expert
    const auto shared = run();
    EXPECT_NE(shared[0], base[0]);
    EXPECT_NE(shared[1], base[1]);
}

template <class R>
void check_against_pytorch(const test::Fixture& fx, double tol) {
    const auto sz = fx.get_int("sizes");
    const int64_t T = sz[0], d = sz[1], K = sz[2];
    TwoLevels<R> rig(cfg_of(d, sz[5], sparse::ExpertKind::swiglu), K, sz[3], sz[4], T, 0);
    for (const auto& e : rig.params.entries()) {
        const auto v = fx.get(e.name);
        ASSERT_EQ(int64_t(v.size()), e.shape.numel()) << e.name;
        for (size_t i = 0; i < v.size(); ++i) rig.param(e.name)[i] = R(v[i]);
    }
    const auto x64 = fx.get("x"), dy64 = fx.get("dy"), y = fx.get("y");
    const std::vector<R> x(x64.begin(), x64.end());
    std::vector<std::vector<R>> dy;
    for (int64_t k = 0; k < K; ++k)
        dy.emplace_back(dy64.begin() + k * T * d, dy64.begin() + (k + 1) * T * d);
    rig.forward(x);
    std::vector<R> dx(size_t(T * d), R(0));
    rig.backward(dy, dx);
    for (int64_t k = 0; k < K; ++k)
        EXPECT_TRUE(test::all_close(
            std::vector<double>(rig.out1[size_t(k)].begin(), rig.out1[size_t(k)].end()),
            std::vector<double>(y.begin() + k * T * d, y.begin() + (k + 1) * T * d), tol, tol))
            << "output " << k;
    EXPECT_TRUE(test::all_close(std::vector<double>(dx.begin(), dx.end()), fx.get("dx"), tol, tol));
    for (const auto& e : rig.params.entries())
        EXPECT_TRUE(test::all_close(sparse::reference::tensor_as_f64(rig.grads, e.name),
                                    fx.get("d" + e.name), tol, tol))
            << e.name;
}

TEST(PleLevels, MatchesPyTorchForwardAndEveryGradient) {
    test::Fixture fx("ple_levels");
    check_against_pytorch<double>(fx, 1e-12);
    check_against_pytorch<float>(fx, 300 * std::numeric_limits<float>::epsilon());
}

TEST(PleLevels, SingleInputCallsOnAPerTaskLevelAreErrors) {
    TwoLevels<double> rig(cfg_of(4, 3, sparse::ExpertKind::gelu), 2, 1, 1, 2, 0);
    std::vector<double> x(8), o0(8), o1(8), dx(8);
    double* outs[] = {o0.data(), o1.data()};
    const double* d_outs[] = {o0.data(), o1.data()};
    EXPECT_TRUE(test::throws_error_with([&] { rig.l1.forward(outs, nullptr, x.data(), 2); },
                                        {"PleLayer::forward", "n_tasks + 1 = 3"}));
    EXPECT_TRUE(test::throws_error_with([&] { rig.l1.backward(d_outs, nullptr, dx.data()); },
                                        {"PleLayer::backward", "n_tasks + 1 = 3"}));
}

TEST(PleLevels, MixtureInputsAreChecked) {
    using Mix = sparse::MultiGateMixture<double>;
    const std::vector<std::vector<int64_t>> cols = {{0, 1}, {1, 2}};
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            Mix m("Op", sparse::ExpertKind::gelu, 3, 4, 2, cols, 0, 4, {0, 1, 1}, {});
        },
        {"Op", "expert_input and gate_input must be given together"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            Mix m("Op", sparse::ExpertKind::gelu, 3, 4, 2, cols, 0, 4, {0, 1}, {0, 1});
        },
        {"Op", "expert_input has 2 entries for 3 experts"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            Mix m("Op", sparse::ExpertKind::gelu, 3, 4, 2, cols, 0, 4, {0, -1, 1}, {0, 1});
        },
        {"Op", "expert 1 reads input -1"}));
    Mix m("Op", sparse::ExpertKind::gelu, 3, 4, 2, cols, 0, 4, {0, 2, 1}, {1, 0});
    EXPECT_EQ(m.n_inputs(), 3);
}

}  // namespace
}  // namespace moe
