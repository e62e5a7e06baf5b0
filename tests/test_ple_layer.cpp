// PleLayer (PLE, one CGC level): forward against a plain double reference (each gate's
// softmax over its own experts and the shared ones written as loops, the experts through
// the naive dense reference), with and without the shared gate; every gradient by finite
// differences; every expert runs once per token; parameter names and shapes; float against
// double; PyTorch (outputs and every gradient); and the errors.
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

MoeConfig ple_cfg(int64_t d, int64_t H, sparse::ExpertKind kind = sparse::ExpertKind::swiglu) {
    MoeConfig c;
    c.d_model = d;
    c.d_expert = H;
    c.expert = kind;
    return c;
}

int64_t bank_size(const PleShape& s) {
    return s.n_shared + s.n_tasks * s.n_per_task;
}

template <class R>
struct PleRig {
    MoeConfig cfg;
    PleShape shape;
    sparse::PleLayer<R> ple;
    Arena params, grads, acts;
    const std::string prefix = "levels.0.";

    PleRig(const MoeConfig& c, const PleShape& s, int64_t max_tokens, double std = 0.7)
        : cfg(c), shape(s), ple(c, s, max_tokens) {
        ple.declare(params, acts, prefix);
        params.allocate();
        grads = params.clone_layout();
        acts.allocate();
        ple.bind(params, grads, acts);
        Rng rng(29);
        ple.init_weights(rng, std, 0.5);
        uint64_t seed = 70;
        for (const auto& g : gate_names()) {  // non-zero biases: a generic point
            const auto b = test::random_normal(size_t(numel(g + "b")), seed++, 0.3);
            for (size_t i = 0; i < b.size(); ++i) param(g + "b")[i] = R(b[i]);
        }
        cfg.n_experts = bank_size(s);
    }
    std::vector<std::string> gate_names() const {
        std::vector<std::string> g;
        for (int64_t k = 0; k < shape.n_tasks; ++k)
            g.push_back("task." + std::to_string(k) + ".gate.");
        if (shape.shared_output) g.push_back("shared.gate.");
        return g;
    }
    R* param(const std::string& n) { return params.get(prefix + n).template ptr<R>(); }
    int64_t numel(const std::string& n) { return params.get(prefix + n).numel(); }
    std::vector<double> grad(const std::string& n) {
        return sparse::reference::tensor_as_f64(grads, prefix + n);
    }
    std::vector<std::string> names() const {
        std::vector<std::string> n = {"experts.w1", "experts.w2"};
        if (cfg.expert == sparse::ExpertKind::swiglu) n.push_back("experts.w3");
        for (const auto& g : gate_names()) {
            n.push_back(g + "w");
            n.push_back(g + "b");
        }
        return n;
    }
};

// The plain reference: gate k's columns are task k's experts then the shared ones, the
// shared gate's every expert in bank order; softmax by loops; outputs through the naive
// dense reference with the gate scattered to bank columns.
std::vector<std::vector<double>> reference_ple(const MoeConfig& c, const PleShape& s,
                                               const Arena& params, const std::string& prefix,
                                               const std::vector<double>& x, int64_t T) {
    const int64_t Es = s.n_shared, Et = s.n_per_task, K = s.n_tasks, E = bank_size(s);
    const int64_t d = c.d_model;
    const auto model = sparse::reference::model_from(params, prefix, c);
    std::vector<std::vector<double>> outs;
    for (int64_t g = 0; g < K + (s.shared_output ? 1 : 0); ++g) {
        std::vector<int64_t> cols;
        if (g < K) {
            for (int64_t j = 0; j < Et; ++j) cols.push_back(Es + g * Et + j);
            for (int64_t j = 0; j < Es; ++j) cols.push_back(j);
        } else {
            for (int64_t e = 0; e < E; ++e) cols.push_back(e);
        }
        const std::string name =
            prefix + (g < K ? "task." + std::to_string(g) + ".gate." : std::string("shared.gate."));
        const auto w = sparse::reference::tensor_as_f64(params, name + "w");
        const auto b = sparse::reference::tensor_as_f64(params, name + "b");
        const int64_t n = int64_t(cols.size());
        std::vector<double> gate(size_t(T * E), 0.0);
        for (int64_t t = 0; t < T; ++t) {
            std::vector<double> ex(static_cast<size_t>(n));
            double sum = 0;
            for (int64_t j = 0; j < n; ++j) {
                double l = b[size_t(j)];
                for (int64_t i = 0; i < d; ++i) l += w[size_t(j * d + i)] * x[size_t(t * d + i)];
                ex[size_t(j)] = std::exp(l);
                sum += ex[size_t(j)];
            }
            for (int64_t j = 0; j < n; ++j)
                gate[size_t(t * E + cols[size_t(j)])] = ex[size_t(j)] / sum;
        }
        outs.push_back(sparse::reference::forward(model, x, T, gate));
    }
    return outs;
}

struct Case {
    int64_t T;
    PleShape shape;
    sparse::ExpertKind kind;
};
const Case kCases[] = {{5, {2, 1, 2, false}, sparse::ExpertKind::swiglu},
                       {6, {3, 2, 1, true}, sparse::ExpertKind::gelu},
                       {4, {2, 0, 2, true}, sparse::ExpertKind::swiglu},
                       {3, {1, 2, 0, false}, sparse::ExpertKind::gelu},
                       {1, {2, 1, 1, true}, sparse::ExpertKind::swiglu}};

std::string name_of(const Case& c) {
    return "T=" + std::to_string(c.T) + " K=" + std::to_string(c.shape.n_tasks) +
           " Es=" + std::to_string(c.shape.n_shared) + " Et=" + std::to_string(c.shape.n_per_task) +
           (c.shape.shared_output ? " shared_output" : "");
}

// Runs forward with K task outputs (and the shared one) into `outs`.
template <class R>
void run_forward(PleRig<R>& rig, std::vector<std::vector<R>>& outs, const std::vector<R>& x,
                 int64_t T) {
    const int64_t K = rig.shape.n_tasks, d = rig.cfg.d_model;
    outs.assign(size_t(K + (rig.shape.shared_output ? 1 : 0)),
                std::vector<R>(size_t(T * d), R(NAN)));
    std::vector<R*> p;
    for (int64_t k = 0; k < K; ++k) p.push_back(outs[size_t(k)].data());
    rig.ple.forward(p.data(), rig.shape.shared_output ? outs.back().data() : nullptr, x.data(), T);
}
template <class R>
void run_backward(PleRig<R>& rig, const std::vector<std::vector<R>>& d_outs, std::vector<R>& dx) {
    const int64_t K = rig.shape.n_tasks;
    std::vector<const R*> p;
    for (int64_t k = 0; k < K; ++k) p.push_back(d_outs[size_t(k)].data());
    rig.ple.backward(p.data(), rig.shape.shared_output ? d_outs.back().data() : nullptr, dx.data());
}

TEST(PleLayer, ForwardMatchesPlainReference) {
    const int64_t d = 4, H = 3;
    for (const Case& fc : kCases) {
        SCOPED_TRACE(name_of(fc));
        PleRig<double> rig(ple_cfg(d, H, fc.kind), fc.shape, fc.T + 1);
        const auto x = test::random_normal(size_t(fc.T * d), 5 + uint64_t(fc.T));
        std::vector<std::vector<double>> outs;
        run_forward(rig, outs, x, fc.T);
        const auto ref = reference_ple(rig.cfg, fc.shape, rig.params, rig.prefix, x, fc.T);
        ASSERT_EQ(outs.size(), ref.size());
        for (size_t g = 0; g < ref.size(); ++g)
            EXPECT_TRUE(test::all_close(outs[g], ref[g], 1e-13, 1e-11)) << "output " << g;
        // Dense gates: every expert of the stacked bank runs once on every token.
        EXPECT_EQ(rig.ple.rows(), fc.T * bank_size(fc.shape));
    }
}

TEST(PleLayer, ParametersAreNamedByModulePath) {
    const PleShape s{3, 2, 4, true};
    PleRig<float> rig(ple_cfg(8, 5), s, 4);
    EXPECT_EQ(rig.params.get("levels.0.experts.w1").shape, (Shape{2 + 3 * 4, 5, 8}));
    EXPECT_EQ(rig.params.get("levels.0.experts.w2").shape, (Shape{2 + 3 * 4, 8, 5}));
    EXPECT_EQ(rig.params.get("levels.0.task.2.gate.w").shape, (Shape{4 + 2, 8}));
    EXPECT_EQ(rig.params.get("levels.0.task.0.gate.b").shape, (Shape{4 + 2}));
    EXPECT_EQ(rig.params.get("levels.0.shared.gate.w").shape, (Shape{2 + 3 * 4, 8}));
    EXPECT_EQ(rig.ple.task_expert(2, 1), 2 + 2 * 4 + 1);
    PleRig<float> last(ple_cfg(8, 5), {3, 2, 4, false}, 4);
    EXPECT_LT(last.params.find("levels.0.shared.gate.w"), 0);
}

TEST(PleLayer, GradientsMatchFiniteDifferences) {
    const int64_t d = 4, H = 3;
    for (const Case& fc : kCases) {
        SCOPED_TRACE(name_of(fc));
        PleRig<double> rig(ple_cfg(d, H, fc.kind), fc.shape, fc.T);
        auto x = test::random_normal(size_t(fc.T * d), 13 + uint64_t(fc.T));
        const size_t n_out = size_t(fc.shape.n_tasks + (fc.shape.shared_output ? 1 : 0));
        std::vector<std::vector<double>> u;
        for (size_t g = 0; g < n_out; ++g)
            u.push_back(test::random_normal(size_t(fc.T * d), 50 + uint64_t(g)));
        std::vector<std::vector<double>> outs;
        auto loss = [&] {
            run_forward(rig, outs, x, fc.T);
            double s = 0;
            for (size_t g = 0; g < n_out; ++g) s += test::weighted_sum(outs[g], u[g]);
            return s;
        };
        loss();
        rig.grads.zero();
        std::vector<double> dx(x.size(), 0.0);
        run_backward(rig, u, dx);
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

TEST(PleLayer, FloatMatchesDouble) {
    const int64_t T = 48, d = 16, H = 20;
    const PleShape s{3, 2, 2, true};
    PleRig<double> rd(ple_cfg(d, H), s, T, 0.3);
    PleRig<float> rf(ple_cfg(d, H), s, T, 0.3);
    for (const auto& n : rd.names())
        for (int64_t i = 0; i < rd.numel(n); ++i) rf.param(n)[i] = float(rd.param(n)[i]);
    const auto x = test::random_normal(size_t(T * d), 3);
    std::vector<std::vector<double>> od, ud;
    std::vector<std::vector<float>> of, uf;
    for (int64_t g = 0; g < 4; ++g) {
        ud.push_back(test::random_normal(size_t(T * d), 60 + uint64_t(g)));
        uf.push_back(test::to_f32(ud.back()));
    }
    run_forward(rd, od, x, T);
    const auto xf = test::to_f32(x);  // kept: backward reads the forward's x again
    run_forward(rf, of, xf, T);
    std::vector<double> dxd(size_t(T * d), 0.0);
    std::vector<float> dxf(size_t(T * d), 0.0f);
    run_backward(rd, ud, dxd);
    run_backward(rf, uf, dxf);
    const double tol = 300 * std::numeric_limits<float>::epsilon();
    for (size_t g = 0; g < od.size(); ++g)
        EXPECT_TRUE(test::all_close(test::to_f64(of[g]), od[g], tol, tol)) << "output " << g;
    EXPECT_TRUE(test::all_close(test::to_f64(dxf), dxd, tol, tol));
    for (const auto& n : rd.names())
        EXPECT_TRUE(test::all_close(rf.grad(n), rd.grad(n), tol, tol)) << n;
}

// Three tasks and a shared gate against PyTorch (gen_ple_layer.py): every output and every
// gradient, on the double path and the float path.
template <class R>
void check_against_pytorch(const test::Fixture& fx, double tol) {
    const auto sz = fx.get_int("sizes");
    const int64_t T = sz[0], d = sz[1], H = sz[5];
    const PleShape s{sz[2], sz[3], sz[4], true};
    PleRig<R> rig(ple_cfg(d, H), s, T);
    for (const auto& n : rig.names()) {
        const auto v = fx.get(n.rfind("experts.", 0) == 0 ? n.substr(8) : n);
        ASSERT_EQ(int64_t(v.size()), rig.numel(n)) << n;
        for (size_t i = 0; i < v.size(); ++i) rig.param(n)[i] = R(v[i]);
    }
    const auto x64 = fx.get("x"), dy64 = fx.get("dy");
    const std::vector<R> x(x64.begin(), x64.end());
    std::vector<std::vector<R>> outs, dy;
    for (int64_t g = 0; g <= s.n_tasks; ++g)
        dy.emplace_back(dy64.begin() + g * T * d, dy64.begin() + (g + 1) * T * d);
    run_forward(rig, outs, x, T);
    std::vector<R> dx(size_t(T * d), R(0));
    run_backward(rig, dy, dx);
    const auto y = fx.get("y");
    for (int64_t g = 0; g <= s.n_tasks; ++g)
        EXPECT_TRUE(test::all_close(
            std::vector<double>(outs[size_t(g)].begin(), outs[size_t(g)].end()),
            std::vector<double>(y.begin() + g * T * d, y.begin() + (g + 1) * T * d), tol, tol))
            << "output " << g;
    EXPECT_TRUE(test::all_close(std::vector<double>(dx.begin(), dx.end()), fx.get("dx"), tol, tol))
        << "dx";
    for (const auto& n : rig.names())
        EXPECT_TRUE(test::all_close(
            rig.grad(n), fx.get("d" + (n.rfind("experts.", 0) == 0 ? n.substr(8) : n)), tol, tol))
            << n;
}

TEST(PleLayer, MatchesPyTorchForwardAndEveryGradient) {
    test::Fixture fx("ple_layer");
    check_against_pytorch<double>(fx, 1e-12);
    check_against_pytorch<float>(fx, 300 * std::numeric_limits<float>::epsilon());
}

TEST(PleLayer, ErrorsNameTheOpAndTheShapes) {
    const MoeConfig c = ple_cfg(4, 3);
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            sparse::PleLayer<double> p(c, {0, 1, 1, false}, 8);
        },
        {"PleLayer", "n_tasks=0"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            sparse::PleLayer<double> p(c, {2, 0, 0, false}, 8);
        },
        {"PleLayer", "n_shared=0", "n_per_task=0"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] {
            sparse::PleLayer<double> p(c, {2, -1, 2, false}, 8);
        },
        {"PleLayer", "n_shared=-1"}));
    PleRig<double> rig(c, {2, 1, 1, false}, 8);
    std::vector<double> x(size_t(9 * 4)), o0(x.size()), o1(x.size()), o2(x.size());
    double* outs[] = {o0.data(), o1.data()};
    EXPECT_TRUE(test::throws_error_with([&] { rig.ple.forward(outs, nullptr, x.data(), 9); },
                                        {"PleLayer::forward", "T=9", "d=4", "max_tokens=8"}));
    EXPECT_TRUE(test::throws_error_with([&] { rig.ple.forward(outs, o2.data(), x.data(), 2); },
                                        {"PleLayer::forward", "shared_output is off"}));
    PleRig<double> lvl(c, {2, 1, 1, true}, 8);
    EXPECT_TRUE(test::throws_error_with([&] { lvl.ple.forward(outs, nullptr, x.data(), 2); },
                                        {"PleLayer::forward", "no shared output"}));
}

}  // namespace
}  // namespace moe
