// Router: the gating network of an MoE layer. Every gating mechanism implements this
// interface; the layer picks one by name (make_router).
//
// A router owns its parameters (declared into the model's parameter arena under a prefix,
// e.g. "layers.3.moe.router.w") and its saved buffers (declared into the layer's
// activation arena), so nothing is allocated per step. Forward fills the RoutingPlan and
// the balancing losses; backward turns dL/d(row weight) back into dL/dx and parameter
// gradients, adding the gradients of its own weighted losses. Gradients reach the router
// only through the routing weights and its losses; the discrete choice gets none.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/arena.h"
#include "core/rng.h"
#include "comm/comm.h"
#include "moe/moe_config.h"
#include "moe/routing_plan.h"

namespace moe::sparse {

template <class R>
struct RouterInput {
    const R* x = nullptr;  // [T, d_model] the layer input
    int64_t T = 0;
    const int32_t* token_ids = nullptr;  // [T] or null (the hash router needs them)
    const int32_t* labels = nullptr;     // [T] domain of each token, -1 = none, or null
    bool training = false;               // noise, jitter, assigned routing by label
    uint64_t seed = 0;                   // noise and jitter come from Rng(seed)
    // Global index of token 0 among the batch's tokens. Token t's noise and jitter are the
    // draws of token first_token + t in the batch's stream, so ranks that each hold a share
    // of a batch (expert or data parallelism) draw what one process running the whole batch
    // would, rather than all repeating the noise of the batch's first tokens.
    int64_t first_token = 0;
};

// Balancing and auxiliary losses of one forward. `*_loss` are the unweighted values;
// total() is what the layer adds to the training loss (each times its coefficient).
struct RouterLosses {
    double aux_loss = 0;          // Switch: E * sum_i f_i P_i (1 when perfectly balanced)
    double z_loss = 0;            // mean_t logsumexp(logits_t)^2
    double importance_loss = 0;   // CV^2 of per-expert importance
    double load_loss = 0;         // CV^2 of the smooth load estimate (noisy_topk)
    double assign_loss = 0;       // assigned: cross-entropy of the gate vs the domain
    double assign_accuracy = -1;  // assigned: share of tokens whose domain the gate predicts
    double weighted_total = 0;    // sum of coef * loss over the terms above
};

template <class R>
class Router {
  public:
    explicit Router(const MoeConfig& cfg) : cfg_(cfg) {}
    virtual ~Router() = default;

    virtual const char* name() const = 0;
    // The most rows a plan for T tokens can hold (T*k for token choice, T*E for dense...).
    virtual int64_t max_rows(int64_t T) const = 0;

    // Phase 1: declare parameters (dtype_of<R>()) and saved buffers for up to max_tokens.
    virtual void declare(Arena& params, Arena& acts, const std::string& prefix,
                         int64_t max_tokens) = 0;
    // Phase 2, after the arenas are allocated: remember the views and initialise weights.
    virtual void bind(Arena& params, Arena& grads, Arena& acts) = 0;
    virtual void init_weights(Rng& rng) = 0;

    // Fills plan (rows grouped by expert, weights, token index) and losses.
    virtual void forward(const RouterInput<R>& in, RoutingPlan<R>& plan, RouterLosses& losses) = 0;
    // d_row_weight: [plan.rows()] dL/d(row_weight). Accumulates into d_x [T, d_model] and
    // the router's parameter gradients, including those of its weighted losses.
    virtual void backward(const RouterInput<R>& in, const RoutingPlan<R>& plan,
                          const R* d_row_weight, R* d_x) = 0;
    // Called after each optimizer step with the last training plan (sigmoid_bias nudges its
    // selection bias here). Default: nothing.
    virtual void after_step(const RoutingPlan<R>& plan) {}

    // [T, E] router probabilities of the last forward, for statistics; null if none.
    virtual const R* probs() const { return nullptr; }

    const MoeConfig& config() const { return cfg_; }

    // Data-parallel runs split one batch over the ranks of `group`. With a group, the
    // balancing losses (and the statistics they come from) are those of the whole batch:
    // per-expert sums and token counts are summed over the group, every rank gets the same
    // loss values, and each rank's backward gives its own tokens' exact share of the
    // gradient, so summing the ranks' gradients gives the single-process gradient. Capacity
    // limits and expert choice still act within each rank's tokens. null (the default):
    // this process's tokens are the whole batch.
    void set_batch_group(comm::Comm* group) { group_ = group; }
    comm::Comm* batch_group() const { return group_; }

  protected:
    // Sums v[0, n) over the batch group (nothing without one).
    void sum_over_batch(double* v, int64_t n) const {
        if (group_ && group_->size() > 1) group_->allreduce_sum(v, n);
    }
    void sum_over_batch(int64_t* v, int64_t n) const {
        if (group_ && group_->size() > 1) group_->allreduce_sum(v, n);
    }
    // This rank's T summed over the batch group.
    int64_t batch_tokens(int64_t T) const {
        sum_over_batch(&T, 1);
        return T;
    }

    MoeConfig cfg_;
    comm::Comm* group_ = nullptr;
};

// The router named by cfg.router; an unknown name is an error listing the known ones, and
// a router that needs the whole sequence (expert_choice, soft) refuses cfg.causal.
template <class R>
std::unique_ptr<Router<R>> make_router(const MoeConfig& cfg);

}  // namespace moe::sparse
