// assigned: experts trained on the data assigned to their speciality, with a gate that
// learns the assignment.
//
// cfg.domain_experts[d] lists the k = top_k experts that serve domain d. The gate is the
// shared linear gate with p = softmax(x W^T + b) [T, E]; a domain's score is the
// probability mass of its experts, q[t, d] = sum_{e in experts(d)} p[t, e].
//
//   route domain of token t: its label l_t when training with labels and l_t >= 0,
//                            otherwise the gate's prediction argmax_d q[t, d]
//                            (ties: lower domain)
//   experts of t: experts(route), weights p[t, e] / q[t, route] (they sum to 1)
//   assign_loss = mean over labelled tokens of -log q[t, l_t]
//   assign_accuracy = share of labelled tokens with argmax_d q[t, d] == l_t
//
// The weights are the gate's own probabilities renormalised over the routed domain, so
// the output path trains the gate within a domain while the assign loss (a cross-entropy
// over domains, the domain probability being the summed mass of its experts) teaches it
// to pick the domain. With labels given both losses are computed in either mode (the
// evaluation loss is then comparable with the training loss); without labels they are 0
// and the accuracy -1. Unlabelled tokens (-1) route by the gate even in training.
//
// Capacity (capacity_factor > 0) and the Switch aux loss are honoured as for every
// token-choice router (seats kept by probability or position; set aux_loss_coef = 0 if
// the label mix should decide the load alone), and the z-loss likewise.
//
// Everything is computed on the logits, where it stays finite when a q underflows in f32:
// the weights are a softmax over the routed domain's logits, w_j = exp(l_j - lse_route),
// and -log q[t, d] = lse_all - lse_d. So, with g_j = dL/dw_j (N labelled tokens):
//   dL/dl_j += w_j (g_j - sum_i w_i g_i)                        routed experts j
//   dL/dl_e += (assign_loss_coef / N) (p_e - [e in experts(l_t)] exp(l_e - lse_{l_t}))
// plus the aux loss through p (softmax backward) and the z-loss; then the linear gate.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/check.h"
#include "kernels/softmax.h"
#include "moe/routers/constructors.h"
#include "moe/routers/gate.h"

namespace moe::sparse {

namespace {

template <class R>
class AssignedRouter final : public GateRouter<R> {
  public:
    explicit AssignedRouter(const MoeConfig& cfg) : GateRouter<R>(cfg) {
        const auto& dom = cfg.assigned.domain_experts;
        const int64_t k = cfg.top_k, E = cfg.n_experts;
        MOE_REQUIRE(!dom.empty(),
                    "router 'assigned' needs moe.domain_experts: one list of experts per domain");
        for (size_t d = 0; d < dom.size(); ++d) {
            MOE_REQUIRE(int64_t(dom[d].size()) == k, "moe.domain_experts[", d, "] lists ",
                        dom[d].size(), " experts but moe.top_k is ", k,
                        "; every domain must list exactly top_k experts");
            for (size_t j = 0; j < dom[d].size(); ++j) {
                const int64_t e = dom[d][j];
                MOE_REQUIRE(e >= 0 && e < E, "moe.domain_experts[", d, "][", j, "] = ", e,
                            " is not an expert (moe.n_experts = ", E, ")");
                for (size_t i = 0; i < j; ++i)
                    MOE_REQUIRE(dom[d][i] != e, "moe.domain_experts[", d, "] lists expert ", e,
                                " twice");
            }
        }
        D_ = int64_t(dom.size());
        experts_.reserve(size_t(D_ * k));
        for (const auto& list : dom)
            for (int64_t e : list) experts_.push_back(int32_t(e));
    }

    const char* name() const override { return "assigned"; }

    void forward(const RouterInput<R>& in, RoutingPlan<R>& plan, RouterLosses& losses) override;
    void backward(const RouterInput<R>& in, const RoutingPlan<R>& plan, const R* d_row_weight,
                  R* d_x) override;

  protected:
    void declare_extra(Arena& params, Arena& acts, const std::string& prefix,
                       int64_t max_tokens) override {
        acts.add(prefix + "router.label", {max_tokens}, DType::i32);
    }
    void bind_extra(Arena& params, Arena& grads, Arena& acts) override {
        const std::string name = this->prefix_ + "router.label";
        label_ = acts.get(name).ptr<int32_t>();
    }

  private:
    // log sum_{e in experts(d)} exp(l[e]): log q[t, d] is this minus the row's logsumexp.
    // Working with logits keeps q's logarithm finite when q underflows in f32.
    double domain_lse(const R* l, int64_t d) const {
        const int32_t* ex = experts_.data() + d * this->K_;
        double m = double(l[ex[0]]);
        for (int64_t j = 1; j < this->K_; ++j) m = std::max(m, double(l[ex[j]]));
        double s = 0;
        for (int64_t j = 0; j < this->K_; ++j) s += std::exp(double(l[ex[j]]) - m);
        return m + std::log(s);
    }

    int64_t D_ = 0;                 // domains
    std::vector<int32_t> experts_;  // [D, k] cfg.assigned.domain_experts, flattened
    int32_t* label_ = nullptr;      // [max_T] each token's label of the last forward, or -1
    int64_t n_labelled_ = 0;        // labelled tokens of the last forward
};

template <class R>
void AssignedRouter<R>::forward(const RouterInput<R>& in, RoutingPlan<R>& plan,
                                RouterLosses& losses) {
    // in.x: [T, d]; in.labels: [T] or null
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = this->E_, k = this->K_;
    this->gate_forward(in);
    kernels::softmax_forward(this->probs_, this->logits_, T, E);
    losses = RouterLosses{};
    losses.z_loss = this->z_loss_forward(T);  // also saves lse_, the log of q's denominator

    n_labelled_ = 0;
    int64_t correct = 0;
    double nll = 0;
    for (int64_t t = 0; t < T; ++t) {
        const R* l = this->logits_ + t * E;
        const int32_t label = in.labels ? in.labels[t] : -1;
        MOE_REQUIRE(label >= -1 && label < D_, "router 'assigned': token ", t, " has domain label ",
                    label, " but moe.domain_experts has ", D_, " domains (labels are 0..", D_ - 1,
                    ", or -1 for none)");
        // Predicted domain: the largest q, i.e. the largest domain logsumexp.
        int64_t pred = 0;
        double best = domain_lse(l, 0);
        for (int64_t d = 1; d < D_; ++d) {
            const double v = domain_lse(l, d);
            if (v > best) best = v, pred = d;
        }
        label_[t] = label;
        if (label >= 0) {
            ++n_labelled_;
            correct += pred == label;
            nll -= domain_lse(l, label) - double(this->lse_[t]);
        }
        // Weights p_e / q over the routed domain = a softmax over its experts' logits.
        const int64_t route = in.training && label >= 0 ? label : pred;
        const double lse_route = domain_lse(l, route);
        const int32_t* ex = experts_.data() + route * k;
        for (int64_t j = 0; j < k; ++j) {
            this->choice_expert_[t * k + j] = ex[j];
            this->choice_weight_[t * k + j] = R(std::exp(double(l[ex[j]]) - lse_route));
            this->choice_priority_[t * k + j] = this->probs_[t * E + ex[j]];
        }
    }
    const bool by_prob = cfg.drop_policy == DropPolicy::probability;
    const Choices<R> ch = this->choices(T, k, by_prob ? this->choice_priority_ : nullptr);
    build_plan_from_choices(plan, ch, E, this->capacity(T, k), this->plan_scratch_);

    // Over the whole batch (Router::set_batch_group): n_labelled_ becomes the batch's count.
    double sums[3] = {nll, double(correct), double(n_labelled_)};
    this->sum_over_batch(sums, 3);
    n_labelled_ = int64_t(sums[2]);
    if (n_labelled_ > 0) {
        losses.assign_loss = sums[0] / double(n_labelled_);
        losses.assign_accuracy = sums[1] / double(n_labelled_);
    }
    losses.aux_loss = this->aux_loss_forward(plan, this->probs_, T, k);
    losses.weighted_total = cfg.aux_loss_coef * losses.aux_loss + cfg.z_loss_coef * losses.z_loss +
                            cfg.assigned.assign_loss_coef * losses.assign_loss;
}

template <class R>
void AssignedRouter<R>::backward(const RouterInput<R>& in, const RoutingPlan<R>& plan,
                                 const R* d_row_weight, R* d_x) {
    // d_row_weight: [plan.rows()]; d_x: [T, d] accumulated
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = this->E_, k = this->K_;
    MOE_CHECK(T == plan.T, "assigned backward: T=", T, " but the plan has T=", plan.T);
    this->scatter_row_grads(plan, d_row_weight, T, k);
    // The aux loss is a function of p; the other terms are written on the logits directly.
    std::fill(this->d_probs_, this->d_probs_ + T * E, R(0));
    this->aux_loss_backward(this->d_probs_, T, cfg.aux_loss_coef);
    std::fill(this->d_logits_, this->d_logits_ + T * E, R(0));
    if (cfg.aux_loss_coef != 0)
        kernels::softmax_backward(this->d_logits_, this->d_probs_, this->probs_, T, E);
    const double scale =
        n_labelled_ > 0 ? cfg.assigned.assign_loss_coef / double(n_labelled_) : 0.0;
    for (int64_t t = 0; t < T; ++t) {
        const R* l = this->logits_ + t * E;
        const R* p = this->probs_ + t * E;
        R* dl = this->d_logits_ + t * E;
        // Routed weights, a softmax over the domain's logits: dl_j = w_j (g_j - sum w_i g_i).
        const int32_t* ex = this->choice_expert_ + t * k;
        const R* w = this->choice_weight_ + t * k;
        const R* g = this->d_choice_weight_ + t * k;
        double c = 0;
        for (int64_t j = 0; j < k; ++j) c += double(w[j]) * double(g[j]);
        for (int64_t j = 0; j < k; ++j) dl[ex[j]] += R(double(w[j]) * (double(g[j]) - c));
        // -log q[t, label] = lse(all) - lse(label's experts): d/dl_e = p_e - [e in label]
        // softmax over the label's experts.
        if (label_[t] < 0 || scale == 0) continue;
        for (int64_t e = 0; e < E; ++e) dl[e] += R(scale * double(p[e]));
        const double lse_label = domain_lse(l, label_[t]);
        const int32_t* lx = experts_.data() + label_[t] * k;
        for (int64_t j = 0; j < k; ++j)
            dl[lx[j]] -= R(scale * std::exp(double(l[lx[j]]) - lse_label));
    }
    this->z_loss_backward(this->d_logits_, T, cfg.z_loss_coef);
    this->gate_backward(in, this->d_logits_, d_x);
}

}  // namespace

template <class R>
std::unique_ptr<Router<R>> make_assigned_router(const MoeConfig& cfg) {
    return std::make_unique<AssignedRouter<R>>(cfg);
}

template std::unique_ptr<Router<float>> make_assigned_router<float>(const MoeConfig&);
template std::unique_ptr<Router<double>> make_assigned_router<double>(const MoeConfig&);

}  // namespace moe::sparse
