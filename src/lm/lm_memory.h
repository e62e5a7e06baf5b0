// How much memory a TransformerLM will take, from its config alone, before it is built.
//
// The constructor allocates parameters, gradients and activations for max_batch sequences
// in a few large arenas; with a config from a user or from checkpoint metadata that can be
// terabytes (model.n_layers = 10^9, moe.n_experts = 10^6, a batch of 4000). The estimate
// uses saturating arithmetic, so absurd sizes come out as "more than 16 EiB" instead of
// wrapping around, and it counts the big arrays only (it is a slight underestimate: a run
// it refuses certainly does not fit).
#pragma once

#include <cstdint>
#include <string>

#include "lm/transformer_lm.h"

namespace moe::lm {

struct LmMemory {
    uint64_t params = 0;            // parameter values (count)
    uint64_t param_bytes = 0;       // parameters and gradients (the model always holds both)
    uint64_t optimizer_bytes = 0;   // AdamW's two moments, when training
    uint64_t activation_bytes = 0;  // for max_batch sequences of seq_len tokens
    uint64_t total() const;
};

// `training`: include AdamW's moments. Call after cfg.validate().
LmMemory estimate_lm_memory(const LmConfig& cfg, int64_t max_batch, bool training);

// estimate_lm_memory, then require_memory with a message that names `source` (the config
// or checkpoint the sizes came from) and breaks the total down, e.g. "runs/x/checkpoint.
// safetensors: model (0.4 GiB of parameters, gradients and AdamW moments; 3.1 GiB of
// activations for batch 16 x 128) needs 3.5 GiB; 2.0 GiB available".
void require_lm_memory(const LmConfig& cfg, int64_t max_batch, bool training,
                       const std::string& source);

}  // namespace moe::lm
