// Whole-model test of an MoE transformer: TransformerLM with softmax_topk MoE layers
// (4 experts, top-2, aux and z losses on) against the same model written out in PyTorch
// (tests/reference/gen_moe_transformer_lm.py): routing, logits, cross-entropy, router loss
// and the gradient of every parameter, by name.
#include <algorithm>
#include <cmath>
#include <set>

#include "lm/transformer_lm.h"
#include "test_support.h"

namespace moe {
namespace {

// The fixture's model; the generator's constants must match.
lm::LmConfig fixture_config() {
    lm::LmConfig c;
    c.vocab_size = 37;
    c.d_model = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.d_ff = 24;  // unused: every layer is MoE
    c.seq_len = 9;
    c.tie_embeddings = false;
    c.norm_eps = 1e-5;
    c.ffn = "moe";
    c.dense_layers = 0;
    c.moe.router = "softmax_topk";
    c.moe.n_experts = 4;
    c.moe.top_k = 2;
    c.moe.d_expert = 12;
    c.moe.softmax_topk.renormalize = true;
    c.moe.capacity_factor = 0;  // dropless
    c.moe.jitter = 0;
    c.moe.aux_loss_coef = 0.05;
    c.moe.z_loss_coef = 0.02;
    c.moe.importance_coef = 0;
    return c;
}

std::vector<float> values(const Tensor& t) {
    return {t.ptr<float>(), t.ptr<float>() + t.numel()};
}

TEST(MoeTransformerVsTorch, RoutingLossAndEveryGradient) {
    const test::Fixture fx("moe_transformer_lm");
    const auto cfg = fixture_config();
    const int64_t B = 2, T = 9, N = B * T, k = cfg.moe.top_k;
    lm::TransformerLM model(cfg, B);
    // Every parameter of the model comes from the fixture: a name missing there fails.
    for (const auto& e : model.params().entries()) {
        const auto want = fx.get("param." + e.name);
        Tensor t = model.params().get(e.name);
        ASSERT_EQ(int64_t(want.size()), t.numel()) << e.name;
        std::transform(want.begin(), want.end(), t.ptr<float>(), [](double v) { return float(v); });
    }
    const auto tok64 = fx.get_int("tokens"), tgt64 = fx.get_int("targets");
    const std::vector<int32_t> tokens(tok64.begin(), tok64.end());
    const std::vector<int32_t> targets(tgt64.begin(), tgt64.end());

    const double loss = model.forward(tokens.data(), targets.data(), B, T);
    const double want_loss = fx.get("loss")[0], want_router = fx.get("router_loss")[0];
    EXPECT_NEAR(loss, want_loss, 1e-5 * std::fabs(want_loss));
    EXPECT_NEAR(model.router_loss(), want_router, 1e-5 * std::fabs(want_router));

    // Routing: each token's set of experts (the fixture holds no near ties, so float32 must
    // choose as float64 did). A different choice would make every later comparison moot.
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const auto chosen = fx.get_int("layers." + std::to_string(l) + ".experts_chosen");
        ASSERT_EQ(int64_t(chosen.size()), N * k);
        const auto& plan = *model.moe_layer(l)->routing_plan();
        std::vector<std::set<int64_t>> got(static_cast<size_t>(N)), want(got);
        for (int64_t e = 0; e < plan.E; ++e)
            for (int64_t r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r)
                got[size_t(plan.row_token[r])].insert(e);
        for (int64_t t = 0; t < N; ++t)
            for (int64_t j = 0; j < k; ++j) want[size_t(t)].insert(chosen[size_t(t * k + j)]);
        for (int64_t t = 0; t < N; ++t)
            EXPECT_EQ(got[size_t(t)], want[size_t(t)]) << "layer " << l << " token " << t;
    }

    // Logits (a forward without targets keeps them): f32 against f64, values of order 1-10.
    model.forward(tokens.data(), nullptr, B, T);
    const std::vector<float> logits(model.logits(), model.logits() + N * cfg.vocab_size);
    EXPECT_TRUE(test::all_close(logits, fx.get("logits"), 2e-4, 2e-4));

    // Gradients of cross-entropy + router losses, every tensor by name, with a tolerance
    // scaled by the tensor's largest gradient (float32 sums against float64).
    model.forward(tokens.data(), targets.data(), B, T);
    model.grads().zero();
    model.backward();
    int compared = 0;
    for (const auto& e : model.params().entries()) {
        const auto want = fx.get("grad." + e.name);
        double scale = 0;
        for (double w : want) scale = std::max(scale, std::fabs(w));
        EXPECT_TRUE(
            test::all_close(values(model.grads().get(e.name)), want, 1e-4 * scale + 1e-7, 1e-3))
            << e.name;
        ++compared;
    }
    // 2 layers x (2 norms, 4 attention, router w and b, 3 expert tensors), embedding,
    // final norm and head: no tensor was skipped.
    EXPECT_EQ(compared, 2 * 11 + 3);
}

}  // namespace
}  // namespace moe
