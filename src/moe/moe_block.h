// MoeBlock<R>: what a model needs of an MoE feed-forward block, whatever mixes the tokens
// into the experts. Two implement it:
//   MoeLayer (src/moe/moe_layer.h)          token choice: a Router builds a RoutingPlan,
//                                           dispatch -> expert bank -> combine;
//   SoftMoeLayer (src/moe/soft_moe_layer.h) Soft MoE: slots as softmax mixtures of tokens,
//                                           no plan and no router loss.
// Both add the shared experts (SharedExperts) on top. make_moe_block picks by cfg.router,
// so a model holds MoeBlocks and never asks which kind it has: routing_plan() is the one
// place the kinds differ for a caller (null when tokens are not routed).
//
// The contract, for both:
//   Lifecycle: make_moe_block(cfg, max_tokens, seq_len); [set_expert_parallel(comm)];
//   declare(params, prefix); <model allocates params and grads>; bind(params, grads);
//   init_weights(rng); then forward/backward pairs, x unchanged between a forward and its
//   backward (it is read again, not copied).
//   Memory: parameters in the model's arena, gradients in its clone; everything forward
//   keeps for backward and all backward scratch in the block's own activation arena,
//   allocated at the end of declare, so a step allocates nothing. Buffers used only
//   inside one call are named d_* or *scratch*; saved_bytes_per_token() counts the rest.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "comm/comm.h"
#include "core/arena.h"
#include "core/rng.h"
#include "moe/expert_bank.h"
#include "moe/moe_config.h"
#include "moe/router.h"
#include "moe/routing_plan.h"
#include "moe/stats.h"

namespace moe::sparse {

template <class R>
class MoeBlock {
  public:
    virtual ~MoeBlock() = default;
    MoeBlock(const MoeBlock&) = delete;
    MoeBlock& operator=(const MoeBlock&) = delete;

    // Expert parallelism over `comm` (size > 1), before declare; a size-1 comm or null
    // changes nothing. Blocks that cannot shard their experts refuse it.
    virtual void set_expert_parallel(comm::Comm* comm) = 0;
    // This rank's first expert (0 without expert parallelism).
    virtual int64_t first_expert() const = 0;

    // Declares the parameters into `params` under `prefix` (e.g. "layers.3.moe."), then
    // declares and allocates the activation arena.
    virtual void declare(Arena& params, const std::string& prefix) = 0;
    // After the model allocated params and grads (same layout).
    virtual void bind(Arena& params, Arena& grads) = 0;
    // Expert input projections ~ N(0, std), down projections ~ N(0, out_std) (out_std < 0:
    // std); the block's gate weights as each kind documents.
    virtual void init_weights(Rng& rng, double std = 0.02, double out_std = -1) = 0;

    // out: [T, d] written; x: [T, d]. extras: token_ids, labels, training, seed (its x and
    // T are ignored). Returns the router's weighted loss, which the caller adds to its
    // training loss with weight 1 (backward adds its gradient).
    virtual double forward(R* out, const R* x, int64_t T, const RouterInput<R>& extras = {}) = 0;
    // d_out: [T, d]; d_x: [T, d] accumulated; parameter gradients accumulated.
    virtual void backward(const R* d_out, R* d_x) = 0;
    // After each optimizer step (e.g. sigmoid_bias nudges its selection bias).
    virtual void after_step() = 0;

    // The last forward's routing, or null when the block does not route tokens (Soft MoE).
    virtual const RoutingPlan<R>* routing_plan() const = 0;
    // The routed experts (this rank's, under expert parallelism).
    virtual ExpertBank<R>& experts() = 0;

    const MoeStats& stats() const { return stats_; }
    const RouterLosses& losses() const { return losses_; }
    const MoeConfig& config() const { return cfg_; }
    int64_t max_tokens() const { return max_tokens_; }
    const Arena& activations() const { return acts_; }
    // Activation bytes kept from forward to backward per token, at max_tokens.
    double saved_bytes_per_token() const;

  protected:
    // Validates cfg; max_tokens: the largest T forward will see.
    MoeBlock(const MoeConfig& cfg, int64_t max_tokens);

    MoeConfig cfg_;
    int64_t max_tokens_;
    Arena acts_;
    RouterLosses losses_;
    MoeStats stats_;
};

// The block cfg.router asks for: SoftMoeLayer for "soft", MoeLayer for every token-choice
// router. seq_len (Soft MoE only: it mixes the tokens of each sequence): tokens per
// sequence, 0 = each call's T tokens are one group; token-choice routers ignore it.
template <class R>
std::unique_ptr<MoeBlock<R>> make_moe_block(const MoeConfig& cfg, int64_t max_tokens,
                                            int64_t seq_len = 0);

extern template class MoeBlock<float>;
extern template class MoeBlock<double>;

}  // namespace moe::sparse
