// dense: a softmax over all experts, every expert on every token (the gate of MMoE and PLE).
//
//   p = softmax(x @ w^T + b)  [T, E];  token t goes to every expert e with weight p[t, e]
//
// The plan has T * E rows (choice c = t * E + e), so the expert compute costs E times a
// top-1 layer: use it for a few experts, e.g. one gate per task over a handful of task
// experts. There is no capacity (capacity_factor is ignored) and top_k is ignored. Losses:
// z-loss, importance CV^2 of sum_t p; the Switch aux loss is the constant 1 here (every
// f_i = 1/E) and its gradient vanishes through the softmax.
#include <memory>

#include "core/check.h"
#include "kernels/softmax.h"
#include "moe/routers/constructors.h"
#include "moe/routers/gate.h"

namespace moe::sparse {

namespace {

template <class R>
class DenseRouter final : public GateRouter<R> {
  public:
    explicit DenseRouter(const MoeConfig& cfg) : GateRouter<R>(cfg) {}
    const char* name() const override { return "dense"; }

    void forward(const RouterInput<R>& in, RoutingPlan<R>& plan, RouterLosses& losses) override;
    void backward(const RouterInput<R>& in, const RoutingPlan<R>& plan, const R* d_row_weight,
                  R* d_x) override;

  protected:
    int64_t choices_per_token() const override { return this->cfg_.n_experts; }
};

template <class R>
void DenseRouter<R>::forward(const RouterInput<R>& in, RoutingPlan<R>& plan, RouterLosses& losses) {
    // in.x: [T, d]
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = this->E_;
    this->gate_forward(in);
    kernels::softmax_forward(this->probs_, this->logits_, T, E);
    // Choices are [T, E] with expert e in column e: the probabilities are the weights as is.
    for (int64_t t = 0; t < T; ++t)
        for (int64_t e = 0; e < E; ++e) this->choice_expert_[t * E + e] = int32_t(e);
    std::copy(this->probs_, this->probs_ + T * E, this->choice_weight_);
    const Choices<R> ch = this->choices(T, E, nullptr);
    build_plan_from_choices(plan, ch, E, /*capacity=*/-1, this->plan_scratch_);

    losses = RouterLosses{};
    losses.aux_loss = this->aux_loss_forward(plan, this->probs_, T, E);
    losses.z_loss = this->z_loss_forward(T);
    losses.importance_loss = this->importance_loss_forward(ch);
    losses.weighted_total = cfg.aux_loss_coef * losses.aux_loss + cfg.z_loss_coef * losses.z_loss +
                            cfg.importance_coef * losses.importance_loss;
}

template <class R>
void DenseRouter<R>::backward(const RouterInput<R>& in, const RoutingPlan<R>& plan,
                              const R* d_row_weight, R* d_x) {
    // d_row_weight: [plan.rows()]; d_x: [T, d] accumulated
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = this->E_;
    MOE_CHECK(T == plan.T, "dense backward: T=", T, " but the plan has T=", plan.T);
    this->scatter_row_grads(plan, d_row_weight, T, E);  // d_choice_weight_ is d p [T, E]
    this->importance_loss_backward(this->d_choice_weight_, this->choices(T, E, nullptr),
                                   cfg.importance_coef);
    this->aux_loss_backward(this->d_choice_weight_, T, cfg.aux_loss_coef);
    this->softmax_gate_backward(in, this->d_choice_weight_, d_x);
}

}  // namespace

template <class R>
std::unique_ptr<Router<R>> make_dense_router(const MoeConfig& cfg) {
    return std::make_unique<DenseRouter<R>>(cfg);
}

template std::unique_ptr<Router<float>> make_dense_router<float>(const MoeConfig&);
template std::unique_ptr<Router<double>> make_dense_router<double>(const MoeConfig&);

}  // namespace moe::sparse
