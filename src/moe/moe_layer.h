// MoeLayer<R>: the Mixture-of-Experts layer, route -> dispatch -> experts -> combine
// (+ shared experts), and its backward in reverse.
//
//   out[t] = sum over t's rows r of w_r * expert_{e(r)}(x[t])
//          + g_t * sum_s shared_s(x[t])        g_t = sigmoid(x[t] . shared.gate) or 1
//
// The router decides the rows and weights (src/moe/router.h); dispatch gathers each
// expert's tokens into one contiguous block; the expert bank runs one GEMM per projection
// per non-empty expert; combine adds the weighted outputs back per token. A token whose
// choices were all dropped gets 0 from the routed path: the caller's residual carries it.
// forward returns the router's weighted loss, which the caller adds to its training loss
// with weight 1; backward adds that loss's gradient too.
//
// Memory and lifecycle: as every MoeBlock (src/moe/moe_block.h); x must stay unchanged
// between forward and its backward (it is read again, not copied).
//
// cfg.router == "soft" is not a token-choice router: make_moe_block builds a SoftMoeLayer
// (src/moe/soft_moe_layer.h) for it, and this constructor refuses it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "comm/comm.h"
#include "core/arena.h"
#include "core/rng.h"
#include "moe/expert_bank.h"
#include "moe/expert_exchange.h"
#include "moe/moe_block.h"
#include "moe/moe_config.h"
#include "moe/router.h"
#include "moe/routing_plan.h"
#include "moe/shared_experts.h"
#include "moe/stats.h"

namespace moe::sparse {

template <class R>
class MoeLayer final : public MoeBlock<R> {
  public:
    // Validates cfg (a token-choice router). max_tokens: the largest T forward will see.
    MoeLayer(const MoeConfig& cfg, int64_t max_tokens);
    ~MoeLayer() override;

    // Expert parallelism over `comm` (size > 1), before declare: this rank holds and runs
    // only the experts [first_expert(), first_expert() + local_experts()) (experts.w* have
    // local_experts() rows), tokens travel to their experts' ranks in dispatch and back in
    // combine (ExpertExchange), and the router's losses and the statistics cover the batch
    // of all ranks (Router::set_batch_group). Every rank calls forward and backward the same
    // number of times. A size-1 comm changes nothing.
    void set_expert_parallel(comm::Comm* comm) override;
    int64_t local_experts() const;
    int64_t first_expert() const override { return exchange_ ? exchange_->first_expert() : 0; }

    // Declares the parameters into `params` under `prefix` (e.g. "layers.3.moe."):
    //   router.w [E, d], router.b [E] (and the router's own), experts.w1 [E, H, d],
    //   experts.w3 [E, H, d] (SwiGLU), experts.w2 [E, d, H], and with shared experts
    //   shared.w1 [S, Hs, d], shared.w3 [S, Hs, d], shared.w2 [S, d, Hs], shared.gate [d].
    // Then declares and allocates the layer's activation arena.
    void declare(Arena& params, const std::string& prefix) override;
    // After the model allocated params and grads (same layout).
    void bind(Arena& params, Arena& grads) override;
    // Expert input projections ~ N(0, std), down projections ~ N(0, out_std) (out_std < 0:
    // std), biases and the shared gate 0. The learned routers' gate weights are always
    // N(0, 0.02) (GateRouter::init_weights): small logits, so routing starts near uniform
    // whatever the experts' scale.
    void init_weights(Rng& rng, double std = 0.02, double out_std = -1) override;

    // out: [T, d] written; x: [T, d]. extras: token_ids, labels, training, seed (its x and T
    // are ignored). Returns the router's weighted loss.
    double forward(R* out, const R* x, int64_t T, const RouterInput<R>& extras = {}) override;
    // d_out: [T, d]; d_x: [T, d] accumulated; parameter gradients accumulated.
    void backward(const R* d_out, R* d_x) override;
    // After each optimizer step (sigmoid_bias nudges its selection bias).
    void after_step() override;

    const RoutingPlan<R>& plan() const { return plan_; }
    const RoutingPlan<R>* routing_plan() const override { return &plan_; }
    Router<R>& router() { return *router_; }
    ExpertBank<R>& experts() override { return *experts_; }

  private:
    using MoeBlock<R>::cfg_;
    using MoeBlock<R>::max_tokens_;
    using MoeBlock<R>::acts_;
    using MoeBlock<R>::losses_;
    using MoeBlock<R>::stats_;

    int64_t d_, H_;
    std::string prefix_;
    std::unique_ptr<Router<R>> router_;
    std::unique_ptr<ExpertBank<R>> experts_;
    std::unique_ptr<ExpertExchange<R>> exchange_;  // expert parallelism, or null
    comm::Comm* group_ = nullptr;                  // the batch's ranks (stats), or null
    SharedExperts<R> shared_;
    bool bound_ = false;

    RoutingPlan<R> plan_;
    RouterInput<R> in_;  // the last forward's input, for backward
    bool have_forward_ = false;

    // Routed path buffers (acts_).
    R* xs_ = nullptr;            // [max_rows, d] dispatched inputs (saved)
    R* ys_ = nullptr;            // [max_rows, d] expert outputs (saved: d_row_weight)
    R* d_ys_ = nullptr;          // [max_rows, d]
    R* d_xs_ = nullptr;          // [max_rows, d]
    R* d_row_weight_ = nullptr;  // [max_rows]
    // Expert parallelism: this rank's experts' rows from every rank (acts_).
    R* oxs_ = nullptr;    // [max_owner_rows, d] received inputs (saved)
    R* oys_ = nullptr;    // [max_owner_rows, d] expert outputs before they go home
    R* od_ys_ = nullptr;  // [max_owner_rows, d]
    R* od_xs_ = nullptr;  // [max_owner_rows, d]
};

extern template class MoeLayer<float>;
extern template class MoeLayer<double>;

}  // namespace moe::sparse
