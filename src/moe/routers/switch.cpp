// switch: top-1 softmax routing with a capacity factor (Fedus et al. 2021, Switch Transformer).
//
//   p = softmax(x @ w^T + b)  [T, E];  token t goes to e_t = argmax p_t with weight p_t[e_t]
//
// The weight is the router probability itself, not renormalised (it would always be 1 and
// the router would get no gradient). With capacity_factor > 0 each expert takes at most
// ceil(capacity_factor * T / E) tokens; the others are dropped: they get no expert and the
// layer's output for them is 0, so the residual path carries them unchanged. Which tokens
// an over-full expert keeps is drop_policy: `probability` keeps the highest p_t[e_t] (ties
// to the earlier token), `position` keeps the earliest tokens (the original Switch rule).
// capacity_factor = 0 is dropless.
//
// Losses: the Switch aux loss E * sum_i f_i P_i (f from the kept tokens, P = mean_t p),
// z-loss, importance CV^2 of the chosen weights. top_k must be 1.
#include <memory>

#include "core/check.h"
#include "kernels/softmax.h"
#include "moe/routers/constructors.h"
#include "moe/routers/gate.h"

namespace moe::sparse {

namespace {

template <class R>
class SwitchRouter final : public GateRouter<R> {
  public:
    explicit SwitchRouter(const MoeConfig& cfg) : GateRouter<R>(cfg) {
        MOE_REQUIRE(cfg.top_k == 1, "moe.top_k (", cfg.top_k,
                    ") must be 1 for router switch, which is top-1");
    }
    const char* name() const override { return "switch"; }

    void forward(const RouterInput<R>& in, RoutingPlan<R>& plan, RouterLosses& losses) override;
    void backward(const RouterInput<R>& in, const RoutingPlan<R>& plan, const R* d_row_weight,
                  R* d_x) override;

  protected:
    int64_t choices_per_token() const override { return 1; }
};

template <class R>
void SwitchRouter<R>::forward(const RouterInput<R>& in, RoutingPlan<R>& plan,
                              RouterLosses& losses) {
    // in.x: [T, d]
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = this->E_;
    this->gate_forward(in);
    kernels::softmax_forward(this->probs_, this->logits_, T, E);
    // The argmax of the logits: the same order as p, without exp's rounding ties.
    GateRouter<R>::topk_rows(this->choice_expert_, this->logits_, T, E, 1);
    for (int64_t t = 0; t < T; ++t) {
        const R p = this->probs_[t * E + this->choice_expert_[t]];
        this->choice_weight_[t] = p;
        this->choice_priority_[t] = p;
    }
    const bool by_prob = cfg.drop_policy == DropPolicy::probability;
    const Choices<R> ch = this->choices(T, 1, by_prob ? this->choice_priority_ : nullptr);
    build_plan_from_choices(plan, ch, E, this->capacity(T, 1), this->plan_scratch_);

    losses = RouterLosses{};
    losses.aux_loss = this->aux_loss_forward(plan, this->probs_, T, 1);
    losses.z_loss = this->z_loss_forward(T);
    losses.importance_loss = this->importance_loss_forward(ch);
    losses.weighted_total = cfg.aux_loss_coef * losses.aux_loss + cfg.z_loss_coef * losses.z_loss +
                            cfg.importance_coef * losses.importance_loss;
}

template <class R>
void SwitchRouter<R>::backward(const RouterInput<R>& in, const RoutingPlan<R>& plan,
                               const R* d_row_weight, R* d_x) {
    // d_row_weight: [plan.rows()]; d_x: [T, d] accumulated
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = this->E_;
    MOE_CHECK(T == plan.T, "switch backward: T=", T, " but the plan has T=", plan.T);
    // A dropped token has no row, so its weight gets no gradient: only the losses reach it.
    this->scatter_row_grads(plan, d_row_weight, T, 1);
    this->importance_loss_backward(this->d_choice_weight_, this->choices(T, 1, nullptr),
                                   cfg.importance_coef);
    std::fill(this->d_probs_, this->d_probs_ + T * E, R(0));
    this->aux_loss_backward(this->d_probs_, T, cfg.aux_loss_coef);
    for (int64_t t = 0; t < T; ++t)
        this->d_probs_[t * E + this->choice_expert_[t]] += this->d_choice_weight_[t];
    this->softmax_gate_backward(in, this->d_probs_, d_x);
}

}  // namespace

template <class R>
std::unique_ptr<Router<R>> make_switch_router(const MoeConfig& cfg) {
    return std::make_unique<SwitchRouter<R>>(cfg);
}

template std::unique_ptr<Router<float>> make_switch_router<float>(const MoeConfig&);
template std::unique_ptr<Router<double>> make_switch_router<double>(const MoeConfig&);

}  // namespace moe::sparse
