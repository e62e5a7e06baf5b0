// sigmoid_bias: sigmoid scores with an auxiliary-loss-free selection bias (DeepSeek-V3).
//
//   s = sigmoid(x @ w^T + b)  [T, E]
//   choose the top k of s + selection_bias, optionally group-limited (below)
//   weight_j = route_scale * s_j / (sum of the chosen s when renormalize, else 1)
//
// The selection bias only chooses: the weights come from the unbiased scores, so it gets no
// gradient. After each optimizer step, after_step() nudges it by the sign of each expert's
// load error: bias_i += gamma if expert i took fewer rows than the mean, -= gamma if more
// (gamma = bias_update_rate), which balances the load without a loss term.
//
// The bias lives in the parameter arena as "router.selection_bias" [E] so that checkpoints
// save and resume it, but it is a buffer, not a trained parameter: its gradient stays exactly
// 0, so AdamW leaves it unchanged (m = v = 0 give a zero update, and rank-1 tensors get no
// weight decay). A trainer must not clip, decay or otherwise rewrite it; only after_step()
// changes it.
//
// Group-limited routing (n_groups > 1): the E experts form n_groups groups of E / n_groups
// consecutive experts; a group's score is the sum of its two best s + bias (one for groups
// of one); each token keeps its topk_groups best groups and chooses its k experts among them.
// This bounds how many groups (devices, in DeepSeek-V3) a token's experts span.
//
// Losses: the Switch aux loss with P_i = mean_t s_i / sum_e s_e (DeepSeek-V3's normalised
// scores), z-loss on the logits, importance CV^2 of the weights.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/check.h"
#include "core/parallel_for.h"
#include "moe/routers/constructors.h"
#include "moe/routers/gate.h"

namespace moe::sparse {

namespace {

// Per-token loops run on OpenMP threads from 16k gate entries (256 tokens x 64 experts),
// as in gate.cpp: below that a fork/join costs about what it saves.
constexpr int64_t kParallelMin = 16384;

template <class R>
class SigmoidBiasRouter final : public GateRouter<R> {
  public:
    explicit SigmoidBiasRouter(const MoeConfig& cfg);
    const char* name() const override { return "sigmoid_bias"; }

    void forward(const RouterInput<R>& in, RoutingPlan<R>& plan, RouterLosses& losses) override;
    void backward(const RouterInput<R>& in, const RoutingPlan<R>& plan, const R* d_row_weight,
                  R* d_x) override;
    void after_step(const RoutingPlan<R>& plan) override;

  protected:
    void declare_extra(Arena& params, Arena& acts, const std::string& prefix,
                       int64_t max_tokens) override;
    void bind_extra(Arena& params, Arena& grads, Arena& acts) override;
    void init_extra(Rng& rng) override { std::fill(sel_bias_, sel_bias_ + this->E_, R(0)); }

  private:
    // Writes choice scores s + bias [T, E] into select_, with the experts of a token's
    // dropped groups at -inf.
    void selection_scores(int64_t T);

    int sel_bias_id_ = -1;
    R* sel_bias_ = nullptr;              // [E] in the parameter arena; its gradient stays 0
    std::vector<int64_t> batch_counts_;  // [E + 1] after_step scratch: counts, total rows
    R* scores_ = nullptr;                // [max_T, E] s = sigmoid(logits)
    R* select_ = nullptr;                // [max_T, E] s + bias, masked by group
    R* chosen_sum_ = nullptr;            // [max_T] sum of the chosen s (renormalisation)
    R* score_sum_ = nullptr;             // [max_T] sum_e s (the aux loss probabilities)
    int32_t* group_top_ = nullptr;       // [max_T, topk_groups] kept groups
    R* group_score_ = nullptr;           // [max_T, n_groups]
};

template <class R>
SigmoidBiasRouter<R>::SigmoidBiasRouter(const MoeConfig& cfg) : GateRouter<R>(cfg) {
    const int64_t E = cfg.n_experts, G = cfg.sigmoid_bias.n_groups;
    // MoeConfig::validate() checks these too; a router built from an unvalidated config
    // must not index outside its groups.
    MOE_REQUIRE(G >= 1 && E % G == 0, "moe.n_groups (", G,
                ") must be >= 1 and divide moe.n_experts (", E, ")");
    MOE_REQUIRE(cfg.sigmoid_bias.topk_groups >= 1 && cfg.sigmoid_bias.topk_groups <= G,
                "moe.topk_groups (", cfg.sigmoid_bias.topk_groups,
                ") must be in [1, moe.n_groups (", G, ")]");
    MOE_REQUIRE(cfg.top_k >= 1 && cfg.top_k <= cfg.sigmoid_bias.topk_groups * (E / G),
                "moe.top_k (", cfg.top_k, ") must be in [1, moe.topk_groups (",
                cfg.sigmoid_bias.topk_groups, ") * experts per group (", E / G,
                ")] for router sigmoid_bias");
}

template <class R>
void SigmoidBiasRouter<R>::declare_extra(Arena& params, Arena& acts, const std::string& prefix,
                                         int64_t max_tokens) {
    const int64_t E = this->E_;
    constexpr DType dt = dtype_of<R>();
    sel_bias_id_ = params.add(prefix + "router.selection_bias", {E}, dt);
    const std::string p = prefix + "router.";
    acts.add(p + "scores", {max_tokens, E}, dt);
    acts.add(p + "select_scratch", {max_tokens, E}, dt);
    acts.add(p + "chosen_sum", {max_tokens}, dt);
    acts.add(p + "score_sum", {max_tokens}, dt);
    acts.add(p + "group_top_scratch", {max_tokens, this->cfg_.sigmoid_bias.topk_groups},
             DType::i32);
    acts.add(p + "group_score_scratch", {max_tokens, this->cfg_.sigmoid_bias.n_groups}, dt);
}

template <class R>
void SigmoidBiasRouter<R>::bind_extra(Arena& params, Arena& grads, Arena& acts) {
    sel_bias_ = params.get(sel_bias_id_).ptr<R>();
    const std::string p = this->prefix_ + "router.";
    scores_ = acts.get(p + "scores").ptr<R>();
    select_ = acts.get(p + "select_scratch").ptr<R>();
    chosen_sum_ = acts.get(p + "chosen_sum").ptr<R>();
    score_sum_ = acts.get(p + "score_sum").ptr<R>();
    group_top_ = acts.get(p + "group_top_scratch").ptr<int32_t>();
    group_score_ = acts.get(p + "group_score_scratch").ptr<R>();
}

template <class R>
void SigmoidBiasRouter<R>::selection_scores(int64_t T) {
    const int64_t E = this->E_, G = this->cfg_.sigmoid_bias.n_groups,
                  KG = this->cfg_.sigmoid_bias.topk_groups;
    parallel_for(T, T * E >= kParallelMin, [&](int64_t t) {
        for (int64_t e = 0; e < E; ++e) select_[t * E + e] = scores_[t * E + e] + sel_bias_[e];
    });
    if (G == 1) return;
    const int64_t gs = E / G;
    parallel_for(T, T * E >= kParallelMin, [&](int64_t t) {
        const R* c = select_ + t * E;
        for (int64_t g = 0; g < G; ++g) {
            // The sum of the group's best two (best one for a group of one).
            R best = -std::numeric_limits<R>::infinity(), second = best;
            for (int64_t i = g * gs; i < (g + 1) * gs; ++i) {
                if (c[i] > best) {
                    second = best;
                    best = c[i];
                } else if (c[i] > second) {
                    second = c[i];
                }
            }
            group_score_[t * G + g] = gs >= 2 ? best + second : best;
        }
    });
    GateRouter<R>::topk_rows(group_top_, group_score_, T, G, KG);
    parallel_for(T, T * E >= kParallelMin, [&](int64_t t) {
        R* c = select_ + t * E;
        for (int64_t g = 0; g < G; ++g) {
            const int32_t* kept = group_top_ + t * KG;
            if (std::find(kept, kept + KG, int32_t(g)) != kept + KG) continue;
            std::fill(c + g * gs, c + (g + 1) * gs, -std::numeric_limits<R>::infinity());
        }
    });
}

template <class R>
void SigmoidBiasRouter<R>::forward(const RouterInput<R>& in, RoutingPlan<R>& plan,
                                   RouterLosses& losses) {
    // in.x: [T, d]
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = this->E_, k = this->K_;
    this->gate_forward(in);
    parallel_for(T, T * E >= kParallelMin, [&](int64_t t) {
        double sum = 0;
        for (int64_t e = 0; e < E; ++e) {
            const double s = 1.0 / (1.0 + std::exp(-double(this->logits_[t * E + e])));
            scores_[t * E + e] = R(s);
            sum += s;
        }
        score_sum_[t] = R(sum);
        for (int64_t e = 0; e < E; ++e)
            this->probs_[t * E + e] = R(double(scores_[t * E + e]) / sum);
    });
    selection_scores(T);
    GateRouter<R>::topk_rows(this->choice_expert_, select_, T, E, k);
    parallel_for(T, T * E >= kParallelMin, [&](int64_t t) {
        double sum = 0;
        for (int64_t j = 0; j < k; ++j)
            sum += double(scores_[t * E + this->choice_expert_[t * k + j]]);
        chosen_sum_[t] = R(sum);
        const double scale =
            cfg.sigmoid_bias.route_scale / (cfg.softmax_topk.renormalize ? sum : 1.0);
        for (int64_t j = 0; j < k; ++j) {
            const int64_t c = t * k + j;
            this->choice_weight_[c] = R(double(scores_[t * E + this->choice_expert_[c]]) * scale);
            this->choice_priority_[c] = this->choice_weight_[c];
        }
    });
    const bool by_prob = cfg.drop_policy == DropPolicy::probability;
    const Choices<R> ch = this->choices(T, k, by_prob ? this->choice_priority_ : nullptr);
    build_plan_from_choices(plan, ch, E, this->capacity(T, k), this->plan_scratch_);

    losses = RouterLosses{};
    losses.aux_loss = this->aux_loss_forward(plan, this->probs_, T, k);
    losses.z_loss = this->z_loss_forward(T);
    losses.importance_loss = this->importance_loss_forward(ch);
    losses.weighted_total = cfg.aux_loss_coef * losses.aux_loss + cfg.z_loss_coef * losses.z_loss +
                            cfg.importance_coef * losses.importance_loss;
}

template <class R>
void SigmoidBiasRouter<R>::backward(const RouterInput<R>& in, const RoutingPlan<R>& plan,
                                    const R* d_row_weight, R* d_x) {
    // d_row_weight: [plan.rows()]; d_x: [T, d] accumulated
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = this->E_, k = this->K_;
    MOE_CHECK(T == plan.T, "sigmoid_bias backward: T=", T, " but the plan has T=", plan.T);
    this->scatter_row_grads(plan, d_row_weight, T, k);
    this->importance_loss_backward(this->d_choice_weight_, this->choices(T, k, nullptr),
                                   cfg.importance_coef);
    // d_probs_ is d s: the aux loss's normalised scores first, then the weights.
    std::fill(this->d_probs_, this->d_probs_ + T * E, R(0));
    this->aux_loss_backward(this->d_probs_, T, cfg.aux_loss_coef);
    parallel_for(T, T * E >= kParallelMin, [&](int64_t t) {
        // p = s / S: d s_m = (dp_m - sum_e dp_e p_e) / S.
        R* ds = this->d_probs_ + t * E;
        const R* p = this->probs_ + t * E;
        double dot = 0;
        for (int64_t e = 0; e < E; ++e) dot += double(ds[e]) * double(p[e]);
        const double S = double(score_sum_[t]);
        for (int64_t e = 0; e < E; ++e) ds[e] = R((double(ds[e]) - dot) / S);
        // w_j = c s_j / S_k (renormalize) or c s_j: d s_m = c / S_k (dw_m - sum_j dw_j s_j / S_k).
        const int32_t* ce = this->choice_expert_ + t * k;
        const R* dw = this->d_choice_weight_ + t * k;
        if (cfg.softmax_topk.renormalize) {
            const double Sk = double(chosen_sum_[t]);
            double wdot = 0;
            for (int64_t j = 0; j < k; ++j) wdot += double(dw[j]) * double(scores_[t * E + ce[j]]);
            for (int64_t j = 0; j < k; ++j)
                ds[ce[j]] += R(cfg.sigmoid_bias.route_scale / Sk * (double(dw[j]) - wdot / Sk));
        } else {
            for (int64_t j = 0; j < k; ++j)
                ds[ce[j]] += R(cfg.sigmoid_bias.route_scale * double(dw[j]));
        }
    });
    // s = sigmoid(l): d l = d s * s (1 - s).
    parallel_for(T * E, T * E >= kParallelMin, [&](int64_t i) {
        const double s = double(scores_[i]);
        this->d_logits_[i] = R(double(this->d_probs_[i]) * s * (1.0 - s));
    });
    this->z_loss_backward(this->d_logits_, T, cfg.z_loss_coef);
    this->gate_backward(in, this->d_logits_, d_x);
}

template <class R>
void SigmoidBiasRouter<R>::after_step(const RoutingPlan<R>& plan) {
    const int64_t E = this->E_;
    MOE_CHECK(plan.E == E, "sigmoid_bias after_step: plan has ", plan.E, " experts, router ", E);
    // Compare count_i * E with the total rows: exact in integers, so an expert at the mean
    // (e.g. a perfectly balanced batch) is not moved by rounding.
    // Counts of the whole batch (Router::set_batch_group), so every rank nudges its copy
    // of the bias identically. [E counts, total rows]; sized on the first call only.
    batch_counts_.resize(size_t(E + 1));
    for (int64_t e = 0; e < E; ++e) batch_counts_[size_t(e)] = plan.count(e);
    batch_counts_[size_t(E)] = plan.rows();
    this->sum_over_batch(batch_counts_.data(), E + 1);
    const int64_t rows = batch_counts_[size_t(E)];
    const R gamma = R(this->cfg_.sigmoid_bias.bias_update_rate);
    for (int64_t e = 0; e < E; ++e) {
        const int64_t scaled = batch_counts_[size_t(e)] * E;
        if (scaled < rows)
            sel_bias_[e] += gamma;
        else if (scaled > rows)
            sel_bias_[e] -= gamma;
    }
}

}  // namespace

template <class R>
std::unique_ptr<Router<R>> make_sigmoid_bias_router(const MoeConfig& cfg) {
    return std::make_unique<SigmoidBiasRouter<R>>(cfg);
}

template std::unique_ptr<Router<float>> make_sigmoid_bias_router<float>(const MoeConfig&);
template std::unique_ptr<Router<double>> make_sigmoid_bias_router<double>(const MoeConfig&);

}  // namespace moe::sparse
