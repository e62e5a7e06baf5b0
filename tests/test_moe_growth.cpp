// Growth and freezing: experts added with a very negative router bias leave the layer's
// outputs unchanged (fresh and noisy-copy initialisation, with shared experts and the rest
// of the arena copied), the new experts' weights are what was asked, and frozen experts
// (weights, router row and bias) stay bit-identical over AdamW steps while the others move.
#include <cmath>
#include <memory>

#include "moe/growth.h"
#include "moe/moe_layer.h"
#include "moe_reference.h"
#include "test_support.h"
#include "train/adamw.h"

namespace moe::sparse {
namespace {

namespace ref = reference;

MoeConfig config() {
    MoeConfig c;
    c.d_model = 8;
    c.d_expert = 12;
    c.n_experts = 4;
    c.top_k = 2;
    c.n_shared = 1;
    c.d_shared = 6;
    c.shared_gate = true;
    return c;
}

struct Model {
    std::unique_ptr<MoeLayer<float>> layer;
    Arena params, grads;
    Model(const MoeConfig& c, int64_t T, bool init) {
        layer = std::make_unique<MoeLayer<float>>(c, T);
        params.add("embed", {5, c.d_model});  // a tensor of "the rest of the model"
        layer->declare(params, "l0.moe.");
        params.allocate();
        grads = params.clone_layout();
        layer->bind(params, grads);
        if (init) {
            Rng rng(3);
            layer->init_weights(rng, 0.3);
            const Tensor w = params.get("l0.moe.router.w"), g = params.get("l0.moe.shared.gate");
            Rng r2(4);
            for (int64_t i = 0; i < w.numel(); ++i) w.ptr<float>()[i] = r2.normal();
            for (int64_t i = 0; i < g.numel(); ++i) g.ptr<float>()[i] = 0.3f * r2.normal();
            float* e = params.get("embed").ptr<float>();
            for (int i = 0; i < 40; ++i) e[i] = float(i);
        }
    }
    std::vector<float> run(const std::vector<float>& x, int64_t T) {
        std::vector<float> out(x.size());
        layer->forward(out.data(), x.data(), T);
        return out;
    }
};

TEST(MoeGrowth, NewExpertsWithVeryNegativeBiasLeaveOutputsUnchanged) {
    for (int64_t copy_from : {-1, 2}) {
        SCOPED_TRACE(copy_from);
        const int64_t T = 32, d = 8, H = 12;
        const MoeConfig c = config();
        Model old(c, T, true);
        const auto x = test::random_normal_f32(size_t(T * d), 5);
        const auto before = old.run(x, T);

        GrowthOptions opt;
        opt.n_new = 3;
        opt.copy_from = copy_from;
        opt.router_bias = -1e4;
        opt.seed = 9;
        Model grown(grown_config(c, 3), T, false);
        grow_experts(grown.params, old.params, "l0.moe.", 4, opt);
        const auto after = grown.run(x, T);
        EXPECT_TRUE(test::all_close(after, before, 1e-6, 1e-6));
        for (int64_t e = 4; e < 7; ++e)
            EXPECT_EQ(grown.layer->stats().tokens_per_expert[size_t(e)], 0);

        // Old tensors copied, old expert slices unchanged, new ones as asked.
        EXPECT_EQ(ref::tensor_as_f64(grown.params, "embed"),
                  ref::tensor_as_f64(old.params, "embed"));
        EXPECT_EQ(ref::tensor_as_f64(grown.params, "l0.moe.shared.w2"),
                  ref::tensor_as_f64(old.params, "l0.moe.shared.w2"));
        const auto ow1 = ref::tensor_as_f64(old.params, "l0.moe.experts.w1");
        const auto nw1 = ref::tensor_as_f64(grown.params, "l0.moe.experts.w1");
        ASSERT_EQ(nw1.size(), size_t(7 * H * d));
        EXPECT_EQ(std::vector<double>(nw1.begin(), nw1.begin() + 4 * H * d), ow1);
        const auto nb = ref::tensor_as_f64(grown.params, "l0.moe.router.b");
        for (int64_t e = 4; e < 7; ++e) EXPECT_EQ(nb[size_t(e)], -1e4);
        const auto nw = ref::tensor_as_f64(grown.params, "l0.moe.router.w");
        const auto ow = ref::tensor_as_f64(old.params, "l0.moe.router.w");
        for (int64_t e = 4; e < 7; ++e) {
            double diff2 = 0, src2 = 0;
            for (int64_t i = 0; i < H * d; ++i) {
                const double src = ow1[size_t((copy_from >= 0 ? copy_from : 0) * H * d + i)];
                diff2 += std::pow(nw1[size_t(e * H * d + i)] - src, 2);
                src2 += src * src;
            }
            if (copy_from >= 0) {
                // A noisy copy: relative difference about opt.noise (0.01), not zero.
                EXPECT_GT(std::sqrt(diff2 / src2), 0.002);
                EXPECT_LT(std::sqrt(diff2 / src2), 0.05);
                for (int64_t j = 0; j < d; ++j)
                    EXPECT_EQ(nw[size_t(e * d + j)], ow[size_t(copy_from * d + j)]);
            } else {
                EXPECT_GT(std::sqrt(diff2 / src2), 0.5);  // fresh: unrelated to expert 0
            }
        }
        // Once the bias is lifted, a new expert does get tokens.
        float* b = grown.params.get("l0.moe.router.b").ptr<float>();
        b[5] = 1e4;
        grown.run(x, T);
        EXPECT_EQ(grown.layer->stats().tokens_per_expert[5], T);
    }
}

TEST(MoeGrowth, Errors) {
    const MoeConfig c = config();
    Model old(c, 4, true);
    Model grown(grown_config(c, 2), 4, false);
    GrowthOptions opt;
    opt.n_new = 2;
    opt.copy_from = 4;  // no such expert
    EXPECT_THROW(grow_experts(grown.params, old.params, "l0.moe.", 4, opt), Error);
    opt.copy_from = -1;
    EXPECT_THROW(grow_experts(grown.params, old.params, "other.", 4, opt), Error);  // wrong prefix
    EXPECT_THROW(grown_config(c, 0), Error);
    EXPECT_THROW(expert_freeze_mask(old.params, "l0.moe.", 4, {4}), Error);
}

TEST(MoeGrowth, FrozenExpertsStayBitIdenticalUnderAdamW) {
    const MoeConfig c = config();
    const int64_t T = 64, d = 8, H = 12, E = 4;
    Model m(c, T, true);
    const std::vector<int64_t> frozen = {0, 2};
    const auto mask = expert_freeze_mask(m.params, "l0.moe.", E, frozen);
    ASSERT_EQ(mask.size(), m.params.f32_count());
    // Per frozen expert: 3 * H * d expert weights, d router weights, 1 bias.
    int64_t flagged = 0;
    for (uint8_t f : mask) flagged += f;
    EXPECT_EQ(flagged, 2 * (3 * H * d + d + 1));

    auto snapshot = [&] {
        std::vector<std::vector<double>> s;
        for (const auto& e : m.params.entries()) s.push_back(ref::tensor_as_f64(m.params, e.name));
        return s;
    };
    const auto before = snapshot();
    train::AdamW opt(m.params, {});
    std::vector<float> out(size_t(T * d)), d_x(size_t(T * d));
    for (int step = 0; step < 3; ++step) {
        const auto x = test::random_normal_f32(size_t(T * d), 20 + step);
        const auto g = test::random_normal_f32(size_t(T * d), 30 + step);
        m.grads.zero();
        m.layer->forward(out.data(), x.data(), T);
        for (int64_t e = 0; e < E; ++e) ASSERT_GT(m.layer->plan().count(e), 0) << "expert " << e;
        m.layer->backward(g.data(), d_x.data());
        opt.step(m.params, m.grads, 1e-2f, mask.data());
    }
    const auto after = snapshot();
    const auto& entries = m.params.entries();
    for (size_t i = 0; i < entries.size(); ++i) {
        const std::string& n = entries[i].name;
        const bool per_expert =
            n.find("experts.") != std::string::npos || n.find("router.") != std::string::npos;
        if (!per_expert) {
            if (n != "embed") {
                EXPECT_NE(after[i], before[i]) << n << " should train";
            }
            continue;
        }
        const size_t slice = before[i].size() / size_t(E);
        for (int64_t e = 0; e < E; ++e) {
            const bool is_frozen = e == 0 || e == 2;
            int64_t same = 0;
            for (size_t j = 0; j < slice; ++j)
                same += after[i][size_t(e) * slice + j] == before[i][size_t(e) * slice + j];
            if (is_frozen) {
                EXPECT_EQ(same, int64_t(slice)) << n << " expert " << e << " changed while frozen";
            } else {
                EXPECT_LT(same, int64_t(slice)) << n << " expert " << e << " did not train";
            }
        }
    }
}

}  // namespace
}  // namespace moe::sparse
