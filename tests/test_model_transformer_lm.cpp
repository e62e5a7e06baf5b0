// Whole-model test: TransformerLM against the same model written out in PyTorch
// (tests/reference/gen_transformer_lm.py): logits, loss, every parameter gradient, and
// the losses of 5 AdamW steps with gradient clipping.
#include <cmath>

#include "lm/transformer_lm.h"
#include "test_support.h"
#include "train/adamw.h"

namespace moe {
namespace {

lm::LmConfig fixture_config(bool tied) {
    lm::LmConfig c;
    c.vocab_size = 37;
    c.d_model = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.d_ff = 24;
    c.seq_len = 9;
    c.tie_embeddings = tied;
    c.norm_eps = 1e-5;
    return c;
}

void load_params(lm::TransformerLM& model, const test::Fixture& fx) {
    for (const auto& e : model.params().entries()) {
        const auto values = fx.get("param." + e.name);
        Tensor t = model.params().get(e.name);
        ASSERT_EQ(int64_t(values.size()), t.numel()) << e.name;
        for (size_t i = 0; i < values.size(); ++i) t.ptr<float>()[i] = float(values[i]);
    }
}

std::vector<int32_t> to_i32(const std::vector<int64_t>& v) {
    return {v.begin(), v.end()};
}

class TransformerVsTorch : public ::testing::TestWithParam<bool> {};

TEST_P(TransformerVsTorch, LogitsLossGradientsAndAdamWSteps) {
    const bool tied = GetParam();
    const test::Fixture fx(tied ? "transformer_lm_tied" : "transformer_lm");
    const auto cfg = fixture_config(tied);
    const int64_t B = 2, T = 9;
    lm::TransformerLM model(cfg, B);
    load_params(model, fx);
    const auto tokens = to_i32(fx.get_int("tokens"));
    const auto targets = to_i32(fx.get_int("targets"));

    // Logits: f32 against f64, values of order 1-10 after two layers.
    model.forward(tokens.data(), nullptr, B, T);
    std::vector<float> logits(model.logits(), model.logits() + B * T * cfg.vocab_size);
    EXPECT_TRUE(test::all_close(logits, fx.get("logits"), 2e-4, 2e-4));

    const double loss = model.forward(tokens.data(), targets.data(), B, T);
    EXPECT_NEAR(loss, fx.get("loss")[0], 1e-5 * std::fabs(fx.get("loss")[0]));

    model.grads().zero();
    model.backward();
    for (const auto& e : model.params().entries()) {
        Tensor g = model.grads().get(e.name);
        std::vector<float> got(g.ptr<float>(), g.ptr<float>() + g.numel());
        const auto want = fx.get("grad." + e.name);
        double scale = 0;
        for (double w : want) scale = std::max(scale, std::fabs(w));
        EXPECT_TRUE(test::all_close(got, want, 1e-4 * scale + 1e-7, 1e-3)) << e.name;
    }

    // Five optimizer steps on the same batch, as the fixture does.
    train::AdamW opt(model.params(), {0.9f, 0.95f, 1e-8f, 0.1f});
    const auto want_losses = fx.get("step_losses");
    for (int step = 0; step <= 5; ++step) {
        const double l = model.forward(tokens.data(), targets.data(), B, T);
        EXPECT_NEAR(l, want_losses[size_t(step)], 2e-4 * want_losses[size_t(step)])
            << "loss before step " << step;
        if (step == 5) break;
        model.grads().zero();
        model.backward();
        train::clip_grad_norm(model.grads(), 1.0);
        opt.step(model.params(), model.grads(), 1e-2f);
    }
}

INSTANTIATE_TEST_SUITE_P(Untied_Tied, TransformerVsTorch, ::testing::Values(false, true));

TEST(TransformerLM, RejectsBatchOrLengthBeyondItsArena) {
    lm::TransformerLM model(fixture_config(false), 2);
    std::vector<int32_t> tokens(3 * 9, 0);
    EXPECT_THROW(model.forward(tokens.data(), nullptr, 3, 9), Error);
    EXPECT_THROW(model.forward(tokens.data(), nullptr, 1, 10), Error);
}

TEST(TransformerLM, ConfigErrorsNameTheField) {
    auto cfg = fixture_config(false);
    cfg.n_heads = 3;  // does not divide d_model = 16
    try {
        lm::TransformerLM model(cfg, 1);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("model.n_heads"), std::string::npos) << e.what();
    }
}

TEST(TransformerLM, SameSeedSameWeights) {
    lm::TransformerLM a(fixture_config(false), 1), b(fixture_config(false), 1);
    a.init_weights(42);
    b.init_weights(42);
    const float* pa = a.params().f32_data();
    const float* pb = b.params().f32_data();
    EXPECT_TRUE(std::equal(pa, pa + a.params().f32_count(), pb));
    b.init_weights(43);
    EXPECT_FALSE(std::equal(pa, pa + a.params().f32_count(), pb));
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

// An MoE model with one expert and top-1 routing computes exactly the dense model: the
// router's softmax over one expert is 1, so the expert's output passes with weight 1.
// Copying the dense FFN weights into the expert must give the same loss and gradients.
TEST(TransformerLM, OneExpertMoeEqualsTheDenseModel) {
    lm::LmConfig dense_cfg = fixture_config(false);
    lm::LmConfig moe_cfg = dense_cfg;
    moe_cfg.ffn = "moe";
    moe_cfg.dense_layers = 1;  // layer 0 stays dense, layer 1 is MoE
    moe_cfg.moe.n_experts = 1;
    moe_cfg.moe.top_k = 1;
    moe_cfg.moe.d_expert = dense_cfg.d_ff;
    moe_cfg.moe.aux_loss_coef = 0;
    lm::TransformerLM dense(dense_cfg, 2), sparse(moe_cfg, 2);
    dense.init_weights(3);
    sparse.init_weights(4);
    ASSERT_NE(sparse.moe_layer(1), nullptr);
    EXPECT_EQ(sparse.moe_layer(0), nullptr);
    auto copy = [&](const std::string& from, const std::string& to) {
        Tensor src = dense.params().get(from), dst = sparse.params().get(to);
        ASSERT_EQ(src.numel(), dst.numel()) << from << " -> " << to;
        std::copy(src.ptr<float>(), src.ptr<float>() + src.numel(), dst.ptr<float>());
    };
    for (const auto& e : dense.params().entries()) {
        std::string to = e.name;
        if (to.rfind("layers.1.ffn.", 0) == 0) to = "layers.1.moe.experts." + to.substr(13);
        copy(e.name, to);
    }
    std::vector<int32_t> tokens(18), targets(18);
    for (int i = 0; i < 18; ++i) tokens[i] = (i * 7) % 37, targets[i] = (i * 5 + 1) % 37;
    const double ld = dense.forward(tokens.data(), targets.data(), 2, 9);
    const double ls = sparse.forward(tokens.data(), targets.data(), 2, 9);
    EXPECT_NEAR(ls, ld, 1e-6);
    EXPECT_EQ(sparse.router_loss(), 0.0);
    dense.grads().zero();
    sparse.grads().zero();
    dense.backward();
    sparse.backward();
    for (const auto& e : dense.params().entries()) {
        std::string to = e.name;
        if (to.rfind("layers.1.ffn.", 0) == 0) to = "layers.1.moe.experts." + to.substr(13);
        Tensor gd = dense.grads().get(e.name), gs = sparse.grads().get(to);
        std::vector<float> a(gs.ptr<float>(), gs.ptr<float>() + gs.numel());
        std::vector<float> b(gd.ptr<float>(), gd.ptr<float>() + gd.numel());
        EXPECT_TRUE(test::all_close(a, b, 1e-6, 1e-4)) << e.name;
    }
    // The router's weight gets no gradient: its single expert always has probability 1.
    Tensor gw = sparse.grads().get("layers.1.moe.router.w");
    for (int64_t i = 0; i < gw.numel(); ++i) EXPECT_EQ(gw.ptr<float>()[i], 0.0f);
}

TEST(TransformerLM, MoeConfigErrorsNameTheKey) {
    lm::LmConfig cfg = fixture_config(false);
    cfg.ffn = "sparse";
    EXPECT_TRUE(test::throws_error_with([&] { lm::TransformerLM m(cfg, 1); }, {"model.ffn"}));
    cfg.ffn = "moe";
    cfg.moe.router = "expert_choice";  // sees the future: refused in a causal LM
    EXPECT_TRUE(test::throws_error_with([&] { lm::TransformerLM m(cfg, 1); }, {"causal"}));
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

// Decoding token by token with the KV cache gives the logits of the full forward at every
// position, for a dense and an MoE model.
class DecodeMatchesForward : public ::testing::TestWithParam<bool> {};

TEST_P(DecodeMatchesForward, AtEveryPosition) {
    lm::LmConfig cfg = fixture_config(false);
    if (GetParam()) {
        cfg.ffn = "moe";
        cfg.moe.n_experts = 4;
        cfg.moe.top_k = 2;
        cfg.moe.d_expert = 12;
    }
    lm::TransformerLM model(cfg, 1);
    model.init_weights(9);
    const int64_t T = 9, V = cfg.vocab_size;
    std::vector<int32_t> tokens(T);
    for (int64_t t = 0; t < T; ++t) tokens[size_t(t)] = int32_t((t * 11 + 3) % V);
    model.forward(tokens.data(), nullptr, 1, T);
    std::vector<float> full(model.logits(), model.logits() + T * V);
    model.start_generation(T);
    for (int64_t t = 0; t < T; ++t) {
        const float* step = model.decode(tokens[size_t(t)]);
        std::vector<float> got(step, step + V),
            want(full.begin() + t * V, full.begin() + (t + 1) * V);
        EXPECT_TRUE(test::all_close(got, want, 1e-5, 1e-4)) << "position " << t;
    }
    EXPECT_TRUE(test::throws_error_with([&] { model.decode(0); }, {"maximum length"}));
    model.start_generation(T);  // a new sequence starts at position 0 again
    const float* first = model.decode(tokens[0]);
    EXPECT_TRUE(test::all_close(std::vector<float>(first, first + V),
                                std::vector<float>(full.begin(), full.begin() + V), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Dense_Moe, DecodeMatchesForward, ::testing::Values(false, true));

}  // namespace
}  // namespace moe
