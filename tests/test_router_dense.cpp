// dense router: every expert on every token with softmax weights (T * E rows, no capacity,
// top_k ignored), its losses, gradients by finite differences over the size sweep, and the
// whole layer against the dense reference.
#include <cmath>
#include <functional>
#include <limits>

#include "router_harness.h"

namespace moe {
namespace {

constexpr double kEpsF = std::numeric_limits<float>::epsilon();

sparse::MoeConfig dense_cfg(int64_t E, int64_t d) {
    sparse::MoeConfig c;
    c.router = "dense";
    c.n_experts = E;
    c.top_k = 1;  // ignored
    c.d_model = d;
    c.d_expert = 3;
    c.aux_loss_coef = 0.4;
    c.z_loss_coef = 0.05;
    c.importance_coef = 0.3;
    return c;
}

TEST(Dense, EveryExpertOnEveryTokenWithSoftmaxWeights) {
    const int64_t d = 5;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64}) {
            SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E);
            auto c = dense_cfg(E, d);
            c.capacity_factor = 0.5;  // ignored: the dense gate never drops
            test::RouterHarness<float> h(c, 64);
            h.randomize("router.w", 1, 1.0);
            h.randomize("router.b", 2, 0.5);
            const auto x = test::random_normal_f32(size_t(T * d), 3);
            h.forward(x.data(), T);
            ASSERT_TRUE(test::plan_invariants(h.plan, T * E, T));
            EXPECT_EQ(h.plan.rows(), T * E);
            EXPECT_EQ(h.plan.dropped, 0);
            const auto w = h.dense_weights();
            for (int64_t t = 0; t < T; ++t) {
                std::vector<double> l(static_cast<size_t>(E));
                double m = -INFINITY, s = 0;
                for (int64_t e = 0; e < E; ++e) {
                    l[size_t(e)] = h.param("router.b")[e];
                    for (int64_t i = 0; i < d; ++i)
                        l[size_t(e)] +=
                            double(x[size_t(t * d + i)]) * h.param("router.w")[e * d + i];
                    m = std::max(m, l[size_t(e)]);
                }
                for (double v : l) s += std::exp(v - m);
                double sum = 0;
                for (int64_t e = 0; e < E; ++e) {
                    EXPECT_NEAR(w[size_t(t * E + e)], std::exp(l[size_t(e)] - m) / s, 4 * kEpsF);
                    sum += w[size_t(t * E + e)];
                }
                EXPECT_NEAR(sum, 1.0, 4 * E * kEpsF);
                EXPECT_EQ(h.plan.token_offsets[t + 1] - h.plan.token_offsets[t], E);
            }
            EXPECT_NEAR(h.losses.aux_loss, 1.0, 8 * E * kEpsF);  // every f_i = 1/E
        }
}

TEST(Dense, BackwardMatchesFiniteDifferencesOverSizes) {
    const int64_t d = 4;
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64}) {
            SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E);
            test::RouterHarness<double> h(dense_cfg(E, d), T);
            h.randomize("router.w", 4, 1.0);
            h.randomize("router.b", 5, 0.5);
            auto x = test::random_normal(size_t(T * d), 6);
            test::check_router_gradients(h, x, T, {"router.w", "router.b"}, false, 0);
        }
}

std::function<void(Arena&, const std::string&)> dense_params(uint64_t seed) {
    return [=](Arena& p, const std::string& prefix) {
        const Tensor w = p.get(prefix + "router.w"), b = p.get(prefix + "router.b");
        const auto vw = test::random_normal(size_t(w.numel()), seed, 1.0);
        const auto vb = test::random_normal(size_t(b.numel()), seed + 1, 0.5);
        std::copy(vw.begin(), vw.end(), w.ptr<double>());
        std::copy(vb.begin(), vb.end(), b.ptr<double>());
    };
}

TEST(DenseLayer, MatchesReferenceOverSizes) {
    for (int64_t T : {1, 3, 7, 64})
        for (int64_t E : {1, 2, 8, 64}) {
            if (T == 64 && E == 64) continue;  // 4096 rows through the reference: slow
            SCOPED_TRACE(::testing::Message() << "T=" << T << " E=" << E);
            test::check_layer_against_reference(dense_cfg(E, 4), T, false, 0, nullptr,
                                                dense_params(10), T == 7 && E == 8);
        }
}

}  // namespace
}  // namespace moe
