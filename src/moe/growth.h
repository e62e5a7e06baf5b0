// Growth: adding experts to a trained MoE layer, and freezing experts while others train.
//
// Expert weights are stacked [E, ...], so growing a layer appends slices. The caller
// declares a new layer with n experts more (grown_config) into a new parameter arena under
// the same prefix, allocates it, and grow_experts fills it from the old arena:
//   - tensors of the same shape are copied (the rest of the model, shared experts...);
//   - the layer's per-expert tensors (those under prefix + "experts." and prefix + "router."
//     whose first dimension grew from old_E to old_E + n) keep the old slices and get new
//     ones: experts as a noisy copy of expert `copy_from` or fresh; router rows copied from
//     that expert's row or fresh; router biases set to `router_bias` (e.g. -1e4: a new
//     expert is never selected until training moves its bias, so the layer's outputs do not
//     change); any other per-expert router tensor copies the source slice or is zero.
// expert_freeze_mask builds the per-element flags AdamW::step takes, so that chosen experts
// (their expert weights, router row and bias) stay bit-identical while the others train.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/arena.h"
#include "moe/moe_config.h"

namespace moe::sparse {

struct GrowthOptions {
    int64_t n_new = 1;
    int64_t copy_from = -1;       // source expert of a noisy copy; -1 = fresh initialisation
    double noise = 0.01;          // copy: w + noise * rms(source slice) * N(0, 1)
    double init_std = 0.02;       // fresh: expert input projections and router rows ~ N(0, std)
    double out_std = -1;          // fresh: down projections ~ N(0, out_std); < 0 = init_std
    bool copy_router_row = true;  // with copy_from: the new router row copies the source's
    double router_bias = -1e4;    // router bias of every new expert
    uint64_t seed = 0;
};

// cfg with opt.n_new more experts.
MoeConfig grown_config(const MoeConfig& cfg, int64_t n_new);

// Fills new_params (allocated, declared for old_E + opt.n_new experts) from old_params
// (old_E experts) as described above. Every tensor of new_params must be in old_params with
// the same shape, or be a per-expert tensor of the layer at `prefix`. f32 or f64 arenas.
void grow_experts(Arena& new_params, const Arena& old_params, const std::string& prefix,
                  int64_t old_E, const GrowthOptions& opt);

// Per-f32-element flags over the whole arena (params.f32_count() entries), 1 for every
// element of the listed experts' slices of the layer's per-expert tensors (prefix +
// "experts.*", prefix + "router.*" with first dimension E: w1/w3/w2, the router row and
// bias, and a router's own per-expert tensors). add_expert_freeze ORs into a mask.
std::vector<uint8_t> expert_freeze_mask(const Arena& params, const std::string& prefix, int64_t E,
                                        const std::vector<int64_t>& frozen);
void add_expert_freeze(std::vector<uint8_t>& mask, const Arena& params, const std::string& prefix,
                       int64_t E, const std::vector<int64_t>& frozen);

}  // namespace moe::sparse
