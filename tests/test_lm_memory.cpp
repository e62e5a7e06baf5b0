// The memory estimate of a TransformerLM from its config (lm/lm_memory.h): the
// parameter count is exact for every kind of model, activations are a lower bound of what
// the model allocates, and absurd configs saturate instead of wrapping around.
#include "lm/lm_memory.h"

#include "core/memory_budget.h"
#include "test_support.h"

namespace moe {
namespace {

lm::LmConfig small(const std::string& ffn) {
    lm::LmConfig c;
    c.vocab_size = 300;
    c.d_model = 32;
    c.n_layers = 3;
    c.n_heads = 4;
    c.d_ff = 48;
    c.seq_len = 16;
    c.ffn = ffn;
    c.moe.n_experts = 6;
    c.moe.top_k = 2;
    c.moe.d_expert = 24;
    return c;
}

void expect_matches_model(const lm::LmConfig& c, int64_t batch) {
    const lm::LmMemory est = lm::estimate_lm_memory(c, batch, /*training=*/true);
    const lm::TransformerLM model(c, batch);
    EXPECT_EQ(est.params, uint64_t(model.num_params()));
    EXPECT_EQ(est.optimizer_bytes, est.params * 8);
    EXPECT_LE(est.activation_bytes, model.activation_bytes());
    EXPECT_GE(est.activation_bytes, model.activation_bytes() / 2);
}

TEST(LmMemory, ParameterCountIsExactAndActivationsALowerBound) {
    expect_matches_model(small("dense"), 4);
    auto tied = small("dense");
    tied.tie_embeddings = true;
    expect_matches_model(tied, 2);
    auto moe = small("moe");
    moe.dense_layers = 1;
    expect_matches_model(moe, 4);
    auto shared = small("moe");
    shared.moe.n_shared = 2;
    shared.moe.d_shared = 16;
    expect_matches_model(shared, 3);
    auto gelu = small("moe");
    gelu.moe.expert = sparse::ExpertKind::gelu;
    expect_matches_model(gelu, 2);
}

TEST(LmMemory, AbsurdConfigsSaturateAndAreRefusedByName) {
    auto c = small("moe");
    c.n_layers = 1000000000;
    c.moe.n_experts = 1000000;
    EXPECT_EQ(lm::estimate_lm_memory(c, 16, true).total(), UINT64_MAX);
    EXPECT_TRUE(test::throws_error_with(
        [&] { lm::require_lm_memory(c, 16, true, "cfg.json"); },
        {"cfg.json: model (", "AdamW moments", "needs more than 16 EiB", "available"}));
    auto v = small("dense");
    v.vocab_size = 1000000000000;
    EXPECT_TRUE(test::throws_error_with([&] { lm::require_lm_memory(v, 1, false, "cfg.json"); },
                                        {"model (", "needs", "available"}));
}

}  // namespace
}  // namespace moe
