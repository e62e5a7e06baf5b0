#include "lm/lm_memory.h"

#include <algorithm>

#include "core/memory_budget.h"

namespace moe::lm {

uint64_t LmMemory::total() const {
    return sat_add(sat_add(param_bytes, optimizer_bytes), activation_bytes);
}

LmMemory estimate_lm_memory(const LmConfig& cfg, int64_t max_batch, bool training) {
    const int64_t V = cfg.vocab_size, C = cfg.d_model, H = cfg.d_ff, L = cfg.n_layers;
    const int64_t T = cfg.seq_len, NH = cfg.n_heads;
    const uint64_t N = sat_product({max_batch, T});  // tokens per forward
    const auto& m = cfg.moe;
    const int64_t moe_layers = cfg.ffn == "moe" ? L - cfg.dense_layers : 0;
    const int64_t dense_layers = L - moe_layers;

    // Parameters: embeddings, head and final norm, attention and norms, then the
    // feed-forward blocks. Exact for the gate routers; routers with extra parameters (noise
    // weights, selection biases) add a few more.
    uint64_t p =
        sat_add(sat_product({V, C, cfg.tie_embeddings ? 1 : 2}), uint64_t(std::max<int64_t>(C, 0)));
    p = sat_add(p, sat_mul(sat_add(sat_product({4, C, C}), sat_product({2, C})), uint64_t(L)));
    p = sat_add(p, sat_product({dense_layers, 3, H, C}));
    if (moe_layers > 0) {
        const int64_t mats = m.expert == sparse::ExpertKind::swiglu ? 3 : 2;
        const int64_t d_shared = m.d_shared > 0 ? m.d_shared : m.d_expert;
        uint64_t per_layer = sat_product({m.n_experts, mats, m.d_expert, C});
        per_layer = sat_add(per_layer, sat_product({m.n_experts, C + 1}));  // gate and bias
        per_layer = sat_add(per_layer, sat_product({m.n_shared, 3, d_shared, C}));
        p = sat_add(p, sat_mul(per_layer, uint64_t(moe_layers)));
    }

    // Activations kept for backward: per layer 8 [N, C] streams and the [B, heads, T, T]
    // attention matrix; dense layers 3 [N, H]; MoE layers their dispatched rows ([N * k, C]
    // four times, [N * k, d_expert] three times); then the [N, V] logits and their gradient.
    const uint64_t per_layer =
        sat_add(sat_mul(N, sat_product({8, C})), sat_product({max_batch, NH, T, T}));
    uint64_t a = sat_mul(per_layer, uint64_t(L));
    a = sat_add(a, sat_mul(N, sat_product({dense_layers, 3, H})));
    if (moe_layers > 0) {
        const uint64_t rows = sat_mul(N, uint64_t(std::max<int64_t>(1, m.top_k)));
        const uint64_t per_row = sat_add(sat_product({4, C}), sat_product({3, m.d_expert}));
        a = sat_add(a, sat_mul(sat_mul(rows, per_row), uint64_t(moe_layers)));
    }
    a = sat_add(a, sat_mul(N, sat_product({2, V})));

    LmMemory r;
    r.params = p;
    r.param_bytes = sat_mul(p, 2 * sizeof(float));
    r.optimizer_bytes = training ? sat_mul(p, 2 * sizeof(float)) : 0;
    r.activation_bytes = sat_mul(a, sizeof(float));
    return r;
}

void require_lm_memory(const LmConfig& cfg, int64_t max_batch, bool training,
                       const std::string& source) {
    const LmMemory m = estimate_lm_memory(cfg, max_batch, training);
    require_memory(m.total(),
                   source + ": model (" + format_bytes(sat_add(m.param_bytes, m.optimizer_bytes)) +
                       " of parameters, gradients" + (training ? " and AdamW moments" : "") + "; " +
                       format_bytes(m.activation_bytes) + " of activations for batch " +
                       std::to_string(max_batch) + " x " + std::to_string(cfg.seq_len) + ")");
}

}  // namespace moe::lm
