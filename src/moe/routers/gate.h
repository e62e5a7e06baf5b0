// GateRouter<R>: the shared base of the learned token-choice routers (softmax_topk,
// noisy_topk, switch, sigmoid_bias, dense, assigned; expert_choice uses its gate too).
//
// It owns the linear gate logits = x @ w^T + b (w: "router.w" [E, d], b: "router.b" [E],
// b starts at 0 so growth can make a new expert unselectable with a very negative bias),
// the buffers every such router needs (logits, probabilities, token-major choices, the
// scratch of build_plan_from_choices, backward scratch), router jitter, and the balancing
// losses of moe_common: z-loss, Switch aux loss, importance CV^2. A router file then holds
// only its selection rule and its weight formula:
//
//   forward:  gate_forward(in); <probs_ and choices from logits_>;
//             build_plan_from_choices(plan, choices(T), E, capacity(T, k), plan_scratch_);
//             losses.aux_loss = aux_loss_forward(plan, probs_, T, k); ...
//   backward: scatter_row_grads(plan, d_row_weight, T); <d_choice_weight_ -> d_probs_ ->
//             d_logits_>; aux_loss_backward(d_probs_, ...); z_loss_backward(d_logits_, ...);
//             gate_backward(in, d_logits_, d_x);
//
// Subclasses add their own parameters or buffers through the *_extra hooks. Everything is
// declared for max_tokens at declare(), so forward and backward allocate nothing.
#pragma once

#include <cstdint>
#include <string>

#include "moe/router.h"

namespace moe::sparse {

template <class R>
class GateRouter : public Router<R> {
  public:
    explicit GateRouter(const MoeConfig& cfg);

    // Token choice: at most choices_per_token() rows per token.
    int64_t max_rows(int64_t T) const override { return T * choices_per_token(); }

    // Declares prefix + "router.w" [E, d] and prefix + "router.b" [E] (dtype_of<R>()), the
    // buffers below for max_tokens, then calls declare_extra().
    void declare(Arena& params, Arena& acts, const std::string& prefix,
                 int64_t max_tokens) override;
    void bind(Arena& params, Arena& grads, Arena& acts) override;
    // w ~ N(0, 0.02) (the usual transformer init), b = 0; then init_extra().
    void init_weights(Rng& rng) override;

    // [T, E] what the subclass wrote into probs_ in the last forward.
    const R* probs() const override { return probs_; }

  protected:
    // Choices per token the buffers are sized for (top_k; switch may return 1).
    virtual int64_t choices_per_token() const { return this->cfg_.top_k; }
    virtual void declare_extra(Arena& params, Arena& acts, const std::string& prefix,
                               int64_t max_tokens) {}
    virtual void bind_extra(Arena& params, Arena& grads, Arena& acts) {}
    virtual void init_extra(Rng& rng) {}

    // ---- the linear gate ----
    // logits_[T, E] = xg @ w^T + b, where xg = x, or, in training with cfg.jitter > 0,
    // x * U(1 - jitter, 1 + jitter) elementwise with noise from Rng(in.seed).fork(1)
    // (fork 1 so a router's own noise from Rng(in.seed) is independent of the jitter);
    // token t gets the multipliers of token in.first_token + t of that stream.
    void gate_forward(const RouterInput<R>& in);
    // d_logits: [T, E]. Accumulates d_w += d_logits^T xg, d_b += column sums of d_logits,
    // d_x [T, d] += (d_logits @ w) * noise.
    void gate_backward(const RouterInput<R>& in, const R* d_logits, R* d_x);
    // The common end of a softmax gate's backward: d_logits_ = softmax backward of
    // d_probs [T, E] through probs_, plus the z-loss gradient, then gate_backward.
    void softmax_gate_backward(const RouterInput<R>& in, const R* d_probs, R* d_x);

    // ---- plan helpers ----
    // The token-major choices of the last forward, as build_plan_from_choices takes them.
    // priority_ = null gives position (token order) drop; pass choice_priority_ for
    // probability drop.
    Choices<R> choices(int64_t T, int64_t k, const R* priority) const;
    // Seats per expert: ceil(capacity_factor * T * k / E), or -1 (dropless) when
    // capacity_factor <= 0.
    int64_t capacity(int64_t T, int64_t k) const;
    // d_choice_weight_[0, T*k) = 0, then += d_row_weight[r] at row_choice[r].
    void scatter_row_grads(const RoutingPlan<R>& plan, const R* d_row_weight, int64_t T, int64_t k);

    // Top-k of each row of v[T, E] in descending order; ties go to the lower index.
    // idx: [T, k]. k <= E.
    static void topk_rows(int32_t* idx, const R* v, int64_t T, int64_t E, int64_t k);

    // ---- balancing losses ----
    // z-loss = mean_t logsumexp(logits_[t, :])^2 over the whole batch. Saves lse_.
    double z_loss_forward(int64_t T);
    // d_logits[T, E] += coef * 2 lse_t softmax(logits_t) / (tokens of the whole batch).
    void z_loss_backward(R* d_logits, int64_t T, double coef) const;

    // Switch aux = E * sum_i f_i P_i with f_i = plan.count(i) / (T * k) (kept rows) and
    // P_i = mean_t probs[t, i], both over the whole batch (see Router::set_batch_group).
    // probs: [T, E]. Saves f_.
    double aux_loss_forward(const RoutingPlan<R>& plan, const R* probs, int64_t T, int64_t k);
    // Gradient only through P: d_probs[t, i] += coef * E * f_i / T.
    void aux_loss_backward(R* d_probs, int64_t T, double coef) const;

    // Importance = CV^2 over experts of imp_i = sum of choice weights of expert i (every
    // choice with expert >= 0, before capacity). Saves d CV^2 / d imp_i.
    double importance_loss_forward(const Choices<R>& ch);
    // d_choice_weight[c] += coef * d CV^2 / d imp_{expert[c]}. d_choice_weight: [T, k].
    void importance_loss_backward(R* d_choice_weight, const Choices<R>& ch, double coef) const;

    // CV^2 = population variance / mean^2 of v[0, n); 0 when the mean is 0. If d_v is
    // given, writes d CV^2 / d v (n values).
    static double cv_squared(const double* v, int64_t n, double* d_v);

    // ---- state ----
    int64_t E_ = 0, d_ = 0, K_ = 0;  // experts, model width, choices per token
    int64_t max_tokens_ = 0;
    std::string prefix_;

    // Parameters and gradients (bound views into the model's arenas).
    R* w_ = nullptr;    // [E, d]
    R* b_ = nullptr;    // [E]
    R* d_w_ = nullptr;  // [E, d]
    R* d_b_ = nullptr;  // [E]

    // Saved buffers and scratch (the layer's activation arena), sized for max_tokens.
    R* logits_ = nullptr;               // [max_T, E]
    R* probs_ = nullptr;                // [max_T, E] router probabilities (subclass fills)
    R* d_logits_ = nullptr;             // [max_T, E] backward scratch
    R* d_probs_ = nullptr;              // [max_T, E] backward scratch
    R* lse_ = nullptr;                  // [max_T] logsumexp of each logits row (z-loss)
    int32_t* choice_expert_ = nullptr;  // [max_T, K]
    R* choice_weight_ = nullptr;        // [max_T, K]
    R* choice_priority_ = nullptr;      // [max_T, K]
    R* d_choice_weight_ = nullptr;      // [max_T, K] backward scratch
    int64_t* plan_scratch_ = nullptr;   // [E + max_T * K] for build_plan_from_choices
    double* f_ = nullptr;               // [2E + 1] aux loss: dispatch fractions f_i, then
                                        // sums of P_i's numerators, then tokens
    double batch_T_ = 1;                // tokens of the whole batch (z-loss, last forward)
    double aux_T_ = 1;                  // tokens of the whole batch (aux loss)
    double* importance_ = nullptr;      // [E] importance of each expert
    double* d_importance_ = nullptr;    // [E] d CV^2 / d importance
    // Jitter (declared only when cfg.jitter > 0).
    R* jitter_noise_ = nullptr;    // [max_T, d] the multipliers
    R* jitter_x_ = nullptr;        // [max_T, d] x * noise, the gate's input
    R* jitter_scratch_ = nullptr;  // [max_T, d] backward scratch
    bool jittered_ = false;        // whether the last forward used jitter

  private:
    int w_id_ = -1, b_id_ = -1;
};

extern template class GateRouter<float>;
extern template class GateRouter<double>;

}  // namespace moe::sparse
