// softmax_topk: the GShard / Mixtral / OLMoE / Qwen-MoE router.
//
//   p = softmax(x W^T + b)                      over all E experts
//   experts of token t: the k largest logits     (ties: lower expert index)
//   weight_j = p_j                               renormalize = false (OLMoE, Qwen-MoE)
//            = p_j / sum_kept p                  renormalize = true (Mixtral)
//            = softmax over the k kept logits    softmax_after_topk = true
//
// The last two are equal in exact arithmetic (exp(l_j) / sum_kept exp(l_i) = p_j / sum
// p_i), so they share one backward: with c = sum_i w_i g_i (g = dL/dweight),
//   dL/dp_j = (g_j - c) / S  for kept j (S = sum of kept p), 0 otherwise,
// and the full softmax backward then gives dL/dl_j = w_j (g_j - c) and 0 off the kept
// set, which is the softmax-over-the-kept backward. Selection uses the logits (the same
// order as the probabilities, without exp's rounding ties).
//
// Capacity (capacity_factor > 0): ceil(cf * T * k / E) seats per expert, kept by
// probability (drop_policy = probability) or by token order (position).
// Losses: Switch aux (E sum f_i P_i, P from the full softmax), z-loss, importance CV^2
// of the combine weights.
#include <algorithm>
#include <cmath>

#include "kernels/softmax.h"
#include "moe/routers/constructors.h"
#include "moe/routers/gate.h"

namespace moe::sparse {

namespace {

template <class R>
class SoftmaxTopkRouter final : public GateRouter<R> {
  public:
    explicit SoftmaxTopkRouter(const MoeConfig& cfg) : GateRouter<R>(cfg) {}

    const char* name() const override { return "softmax_topk"; }

    void forward(const RouterInput<R>& in, RoutingPlan<R>& plan, RouterLosses& losses) override {
        const MoeConfig& cfg = this->cfg_;
        const int64_t T = in.T, E = this->E_, k = cfg.top_k;
        this->gate_forward(in);
        kernels::softmax_forward(this->probs_, this->logits_, T, E);
        this->topk_rows(this->choice_expert_, this->logits_, T, E, k);
        const bool joint = cfg.softmax_topk.renormalize || cfg.softmax_topk.softmax_after_topk;
        for (int64_t t = 0; t < T; ++t) {
            const R* p = this->probs_ + t * E;
            const R* l = this->logits_ + t * E;
            const int32_t* ex = this->choice_expert_ + t * k;
            R* w = this->choice_weight_ + t * k;
            R* prio = this->choice_priority_ + t * k;
            double s = 0;
            for (int64_t j = 0; j < k; ++j) s += double(p[ex[j]]);
            // Softmax over the kept logits: ex[0] holds the largest, so exp never overflows.
            double se = 0;
            if (cfg.softmax_topk.softmax_after_topk)
                for (int64_t j = 0; j < k; ++j) se += std::exp(double(l[ex[j]]) - double(l[ex[0]]));
            for (int64_t j = 0; j < k; ++j) {
                const double pj = double(p[ex[j]]);
                prio[j] = R(pj);
                if (cfg.softmax_topk.softmax_after_topk)
                    w[j] = R(std::exp(double(l[ex[j]]) - double(l[ex[0]])) / se);
                else
                    w[j] = R(joint ? pj / s : pj);
            }
        }
        const bool by_prob = cfg.drop_policy == DropPolicy::probability;
        const Choices<R> ch = this->choices(T, k, by_prob ? this->choice_priority_ : nullptr);
        build_plan_from_choices(plan, ch, E, this->capacity(T, k), this->plan_scratch_);
        losses = RouterLosses{};
        losses.aux_loss = this->aux_loss_forward(plan, this->probs_, T, k);
        losses.z_loss = this->z_loss_forward(T);
        losses.importance_loss = this->importance_loss_forward(ch);
        losses.weighted_total = cfg.aux_loss_coef * losses.aux_loss +
                                cfg.z_loss_coef * losses.z_loss +
                                cfg.importance_coef * losses.importance_loss;
    }

    void backward(const RouterInput<R>& in, const RoutingPlan<R>& plan, const R* d_row_weight,
                  R* d_x) override {
        const MoeConfig& cfg = this->cfg_;
        const int64_t T = in.T, E = this->E_, k = cfg.top_k;
        const bool joint = cfg.softmax_topk.renormalize || cfg.softmax_topk.softmax_after_topk;
        this->scatter_row_grads(plan, d_row_weight, T, k);
        const Choices<R> ch = this->choices(T, k, nullptr);
        this->importance_loss_backward(this->d_choice_weight_, ch, cfg.importance_coef);
        std::fill(this->d_probs_, this->d_probs_ + T * E, R(0));
        for (int64_t t = 0; t < T; ++t) {
            const R* p = this->probs_ + t * E;
            const int32_t* ex = this->choice_expert_ + t * k;
            const R* w = this->choice_weight_ + t * k;
            const R* g = this->d_choice_weight_ + t * k;
            R* dp = this->d_probs_ + t * E;
            if (!joint) {
                for (int64_t j = 0; j < k; ++j) dp[ex[j]] += g[j];
                continue;
            }
            double s = 0, c = 0;
            for (int64_t j = 0; j < k; ++j) {
                s += double(p[ex[j]]);
                c += double(w[j]) * double(g[j]);
            }
            for (int64_t j = 0; j < k; ++j) dp[ex[j]] += R((double(g[j]) - c) / s);
        }
        this->aux_loss_backward(this->d_probs_, T, cfg.aux_loss_coef);
        this->softmax_gate_backward(in, this->d_probs_, d_x);
    }
};

}  // namespace

template <class R>
std::unique_ptr<Router<R>> make_softmax_topk_router(const MoeConfig& cfg) {
    return std::make_unique<SoftmaxTopkRouter<R>>(cfg);
}

template std::unique_ptr<Router<float>> make_softmax_topk_router<float>(const MoeConfig&);
template std::unique_ptr<Router<double>> make_softmax_topk_router<double>(const MoeConfig&);

}  // namespace moe::sparse
