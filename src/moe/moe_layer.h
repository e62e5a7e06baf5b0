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
// Memory: parameters go into the model's arena (declare), gradients into its clone
// (bind). Everything forward keeps for backward, and all backward scratch, lives in the
// layer's own activation arena, sized for max_tokens and allocated at the end of
// declare: a step allocates nothing. Buffers only used inside one call are named d_* or
// *scratch*; saved_bytes_per_token() counts the others.
//
// Lifecycle: MoeLayer(cfg, max_tokens); declare(params, prefix); <model allocates
// params and grads>; bind(params, grads); init_weights(rng); then forward/backward pairs.
// x must stay unchanged between forward and its backward (it is read again, not copied).
//
// cfg.router == "soft" hands the routed path to SoftMoe (src/moe/soft_moe.h), which mixes
// tokens into slots instead of routing them: no plan and no router loss (forward returns
// 0); shared experts still add on top, and the statistics show every expert with
// groups * slots_per_expert rows.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/arena.h"
#include "core/rng.h"
#include "comm/comm.h"
#include "moe/expert_bank.h"
#include "moe/expert_exchange.h"
#include "moe/moe_config.h"
#include "moe/router.h"
#include "moe/routing_plan.h"
#include "moe/stats.h"

namespace moe::sparse {

template <class R>
class SoftMoe;  // src/moe/soft_moe.h

template <class R>
class MoeLayer {
  public:
    // Validates cfg. max_tokens: the largest T forward will see. seq_len (Soft MoE only:
    // it mixes the tokens of each sequence): tokens per sequence, 0 = each call's T tokens
    // are one group. Token-choice routers ignore it.
    MoeLayer(const MoeConfig& cfg, int64_t max_tokens, int64_t seq_len = 0);
    ~MoeLayer();
    MoeLayer(const MoeLayer&) = delete;
    MoeLayer& operator=(const MoeLayer&) = delete;

    // Expert parallelism over `comm` (size > 1), before declare: this rank holds and runs
    // only the experts [first_expert(), first_expert() + local_experts()) (experts.w* have
    // local_experts() rows), tokens travel to their experts' ranks in dispatch and back in
    // combine (ExpertExchange), and the router's losses and the statistics cover the batch
    // of all ranks (Router::set_batch_group). Every rank calls forward and backward the same
    // number of times. Not for Soft MoE. A size-1 comm changes nothing.
    void set_expert_parallel(comm::Comm* comm);
    int64_t local_experts() const;
    int64_t first_expert() const { return exchange_ ? exchange_->first_expert() : 0; }

    // Declares the parameters into `params` under `prefix` (e.g. "layers.3.moe."):
    //   router.w [E, d], router.b [E] (and the router's own), experts.w1 [E, H, d],
    //   experts.w3 [E, H, d] (SwiGLU), experts.w2 [E, d, H], and with shared experts
    //   shared.w1 [S, Hs, d], shared.w3 [S, Hs, d], shared.w2 [S, d, Hs], shared.gate [d].
    // Then declares and allocates the layer's activation arena.
    void declare(Arena& params, const std::string& prefix);
    // After the model allocated params and grads (same layout).
    void bind(Arena& params, Arena& grads);
    // Expert input projections ~ N(0, std), down projections ~ N(0, out_std) (out_std < 0:
    // std), biases and the shared gate 0. The learned routers' gate weights are always
    // N(0, 0.02) (GateRouter::init_weights; Soft MoE's phi uses std): small logits, so
    // routing starts near uniform whatever the experts' scale.
    void init_weights(Rng& rng, double std = 0.02, double out_std = -1);

    // out: [T, d] written; x: [T, d]. extras: token_ids, labels, training, seed (its x and T
    // are ignored). Returns the router's weighted loss.
    double forward(R* out, const R* x, int64_t T, const RouterInput<R>& extras = {});
    // d_out: [T, d]; d_x: [T, d] accumulated; parameter gradients accumulated.
    void backward(const R* d_out, R* d_x);
    // After each optimizer step (sigmoid_bias nudges its selection bias).
    void after_step();

    const MoeStats& stats() const { return stats_; }
    const RouterLosses& losses() const { return losses_; }
    const RoutingPlan<R>& plan() const { return plan_; }
    // The router (Soft MoE has none: an error) and the expert bank (Soft MoE's own).
    Router<R>& router() {
        MOE_CHECK(router_ != nullptr, "MoeLayer::router: router 'soft' has no Router");
        return *router_;
    }
    ExpertBank<R>& experts();
    const MoeConfig& config() const { return cfg_; }
    int64_t max_tokens() const { return max_tokens_; }
    bool is_soft() const { return soft_ != nullptr; }
    // Activation bytes kept from forward to backward per token, at max_tokens.
    double saved_bytes_per_token() const;
    const Arena& activations() const { return acts_; }

  private:
    void declare_shared(Arena& params);
    void shared_forward(R* out, const R* x, int64_t T);
    void shared_backward(const R* d_out, R* d_x, int64_t T);

    MoeConfig cfg_;
    int64_t max_tokens_, d_, H_, S_, Hs_;
    std::string prefix_;
    std::unique_ptr<Router<R>> router_;
    std::unique_ptr<ExpertBank<R>> experts_;
    std::unique_ptr<ExpertExchange<R>> exchange_;  // expert parallelism, or null
    comm::Comm* group_ = nullptr;                  // the batch's ranks (stats), or null
    // shared_ptr: its deleter is bound where SoftMoe is complete, so this header needs only
    // the forward declaration.
    std::shared_ptr<SoftMoe<R>> soft_;
    Arena acts_;
    bool bound_ = false;

    RoutingPlan<R> plan_;
    RouterLosses losses_;
    MoeStats stats_;
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

    // Shared experts (params/grads and acts_).
    int sw1_id_ = -1, sw3_id_ = -1, sw2_id_ = -1, sgate_id_ = -1;
    R *sw1_ = nullptr, *sw3_ = nullptr, *sw2_ = nullptr, *sgate_ = nullptr;
    R *d_sw1_ = nullptr, *d_sw3_ = nullptr, *d_sw2_ = nullptr, *d_sgate_ = nullptr;
    R *sh1_ = nullptr, *sh3_ = nullptr, *sact_ = nullptr;  // [S, max_T, Hs] saved
    R* sout_ = nullptr;      // [max_T, d] sum of the shared experts (saved when gated)
    R* stmp_ = nullptr;      // [max_T, d] scratch: one shared expert's output (S > 1)
    R* sg_ = nullptr;        // [max_T] gate values (saved)
    R* d_sout_ = nullptr;    // [max_T, d]
    R* sscratch_ = nullptr;  // [3, max_T, Hs]
};

extern template class MoeLayer<float>;
extern template class MoeLayer<double>;

}  // namespace moe::sparse
