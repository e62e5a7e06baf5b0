// expert_choice: experts choose their tokens (Zhou et al. 2022, "Mixture-of-Experts with
// Expert Choice Routing").
//
//   S = softmax(x W^T + b)                  [T, E] token-to-expert scores, over experts
//   C = min(T, ceil(T * cf / E))            seats per expert; cf = capacity_factor, or
//                                           top_k when capacity_factor is 0 (then on
//                                           average each token gets k experts, as top-k)
//   expert e takes the C tokens with the largest S[:, e] (ties: lower token first)
//   row weight of (t, e) = S[t, e]
//
// Every expert gets exactly C rows: the load is balanced by construction, so the router
// needs no balancing loss (the Switch aux loss would be the same constant for every
// expert, with zero gradient through the softmax; it is reported as 0). A token may be
// taken by 0 to E experts; one taken by none gets no routed output (only the residual).
// Rows are written expert-major directly, each expert's tokens ascending, with
// row_choice = t * E + e, then build_token_index. plan.dropped stays 0: no choice is
// removed by a limit (the tokens nobody took are not choices of this router).
//
// Each expert's column is ranked over the whole batch, so a token's route depends on later
// tokens: make_expert_choice_router refuses cfg.causal.
//
// Backward: the weights are the chosen scores, so dL/dS[t, e] = dL/d(row weight of (t, e))
// and the softmax backward gives dL/dlogits; the z-loss adds its own term.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"
#include "core/parallel_for.h"
#include "kernels/softmax.h"
#include "moe/routers/constructors.h"
#include "moe/routers/gate.h"

namespace moe::sparse {

namespace {

// Ranking one column is O(T) with nth_element; below 16k scores (e.g. T=256 with E=64)
// forking threads costs more than the ranking.
constexpr int64_t kParallelMin = 16384;

template <class R>
class ExpertChoiceRouter final : public GateRouter<R> {
  public:
    explicit ExpertChoiceRouter(const MoeConfig& cfg) : GateRouter<R>(cfg) {
        MOE_REQUIRE(!cfg.causal,
                    "router 'expert_choice' sees every token of the batch, including later "
                    "ones; it cannot be used in a causal model (set moe.router to a "
                    "token-choice router)");
        MOE_REQUIRE(cfg.capacity_factor >= 0, "moe.capacity_factor must be >= 0, got ",
                    cfg.capacity_factor);
    }

    const char* name() const override { return "expert_choice"; }

    // Seats per expert for a batch of T tokens.
    int64_t seats(int64_t T) const {
        const double cf =
            this->cfg_.capacity_factor > 0 ? this->cfg_.capacity_factor : double(this->cfg_.top_k);
        const int64_t E = this->cfg_.n_experts;
        const int64_t c = int64_t(std::ceil(double(T) * cf / double(E)));
        return std::clamp<int64_t>(c, 1, T);
    }
    int64_t max_rows(int64_t T) const override { return this->cfg_.n_experts * seats(T); }

    void forward(const RouterInput<R>& in, RoutingPlan<R>& plan, RouterLosses& losses) override;
    void backward(const RouterInput<R>& in, const RoutingPlan<R>& plan, const R* d_row_weight,
                  R* d_x) override;

  protected:
    // The token-major choice buffers of the base are unused here (rows are written
    // directly); one per token keeps them small.
    int64_t choices_per_token() const override { return 1; }

    void declare_extra(Arena& params, Arena& acts, const std::string& prefix,
                       int64_t max_tokens) override {
        MOE_CHECK(max_tokens * this->E_ < int64_t(std::numeric_limits<int32_t>::max()),
                  "expert_choice: T*E = ", max_tokens * this->E_,
                  " does not fit the int32 choice ids");
        acts.add(prefix + "router.ec_rank_scratch", {this->E_, max_tokens}, DType::i32);
    }
    void bind_extra(Arena& params, Arena& grads, Arena& acts) override {
        const std::string name = this->prefix_ + "router.ec_rank_scratch";
        rank_ = acts.get(name).ptr<int32_t>();
    }

  private:
    int32_t* rank_ = nullptr;  // [E, max_T] per-expert token ranking scratch
};

template <class R>
void ExpertChoiceRouter<R>::forward(const RouterInput<R>& in, RoutingPlan<R>& plan,
                                    RouterLosses& losses) {
    // in.x: [T, d]
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = this->E_, C = seats(T);
    MOE_CHECK(plan.max_rows >= E * C, "expert_choice: the plan holds ", plan.max_rows,
              " rows, a batch of ", T, " tokens needs ", E * C);
    this->gate_forward(in);
    kernels::softmax_forward(this->probs_, this->logits_, T, E);

    // Each expert ranks every token by its score and keeps the top C, then restores token
    // order so the rows of an expert are ascending (as build_plan_from_choices makes them).
    const R* S = this->probs_;
    parallel_for_dynamic(E, T * E >= kParallelMin, [&](int64_t e) {
        int32_t* idx = rank_ + e * this->max_tokens_;
        for (int64_t t = 0; t < T; ++t) idx[t] = int32_t(t);
        if (C < T) {
            // A strict total order (score descending, then token ascending): the kept set
            // is unique, whatever nth_element's internal order.
            std::nth_element(idx, idx + C, idx + T, [S, E, e](int32_t a, int32_t b) {
                const R sa = S[a * E + e], sb = S[b * E + e];
                return sa != sb ? sa > sb : a < b;
            });
            std::sort(idx, idx + C);
        }
        const int64_t r0 = e * C;
        for (int64_t i = 0; i < C; ++i) {
            const int32_t t = idx[i];
            plan.row_token[r0 + i] = t;
            plan.row_choice[r0 + i] = int32_t(t * E + e);
            plan.row_weight[r0 + i] = S[t * E + e];
        }
    });
    plan.T = T;
    plan.E = E;
    for (int64_t e = 0; e <= E; ++e) plan.offsets[e] = e * C;
    plan.dropped = 0;
    build_token_index(plan, this->plan_scratch_);

    losses = RouterLosses{};
    losses.z_loss = this->z_loss_forward(T);
    losses.weighted_total = cfg.z_loss_coef * losses.z_loss;
}

template <class R>
void ExpertChoiceRouter<R>::backward(const RouterInput<R>& in, const RoutingPlan<R>& plan,
                                     const R* d_row_weight, R* d_x) {
    // d_row_weight: [plan.rows()]; d_x: [T, d] accumulated
    const int64_t T = in.T, E = this->E_;
    MOE_CHECK(T == plan.T, "expert_choice backward: T=", T, " but the plan has T=", plan.T);
    std::fill(this->d_probs_, this->d_probs_ + T * E, R(0));
    const int64_t rows = plan.rows();
    for (int64_t r = 0; r < rows; ++r) {
        MOE_DCHECK(plan.row_choice[r] >= 0 && plan.row_choice[r] < T * E,
                   "expert_choice backward: bad choice ", plan.row_choice[r]);
        this->d_probs_[plan.row_choice[r]] += d_row_weight[r];
    }
    this->softmax_gate_backward(in, this->d_probs_, d_x);
}

}  // namespace

template <class R>
std::unique_ptr<Router<R>> make_expert_choice_router(const MoeConfig& cfg) {
    return std::make_unique<ExpertChoiceRouter<R>>(cfg);
}

template std::unique_ptr<Router<float>> make_expert_choice_router<float>(const MoeConfig&);
template std::unique_ptr<Router<double>> make_expert_choice_router<double>(const MoeConfig&);

}  // namespace moe::sparse
