// noisy_topk: noisy top-k gating (Shazeer et al. 2017, "Outrageously Large Neural Networks").
//
//   clean = x @ w^T + b        sd = softplus(x @ w_noise^T)        [T, E]
//   H = clean + eps * sd       eps ~ N(0, 1) from Rng(in.seed) in training; H = clean in eval
//                              (token t draws as token in.first_token + t of the batch)
//   keep the top k of H per token; gates = softmax over the kept H (0 elsewhere)
//   importance = CV^2(sum_t gates[t, :])
//   load       = CV^2(sum_t P[t, :]),  P[t, i] = Phi((clean_i - kth_excl(H_t, k, i)) / sd_i)
//
// P[t, i] is the paper's smooth load estimate: the probability that H_i would still be in the
// top k if only its own noise were drawn again. kth_excl(H, k, i), the k-th largest of H
// without component i, is the (k+1)-th largest of H when i is kept and the k-th when it is
// not; with k = E every expert is always kept and P = 1. Gradients flow through the gates,
// the noise term eps * sd (to w_noise), both CV^2 losses, and, in P, through clean_i, sd_i and
// the threshold H_j (to clean_j and sd_j), exactly as autograd through the paper's formula.
//
// Parameters: router.w, router.b (the shared gate) and router.w_noise [E, d], initialised to
// zero as in the paper (sd = softplus(0) = 0.69 at the start: a little noise, no signal).
// The Switch aux loss uses the gates as the router probabilities; z-loss uses clean.
#include <algorithm>
#include <cmath>
#include <memory>

#include "core/check.h"
#include "core/parallel_for.h"
#include "moe/routers/constructors.h"
#include "moe/routers/gate.h"
#include "nn/linear.h"

namespace moe::sparse {

namespace {

// Per-token loops run on OpenMP threads from 16k gate entries (256 tokens x 64 experts),
// as in gate.cpp: below that a fork/join costs about what it saves.
constexpr int64_t kParallelMin = 16384;

double softplus(double v) {
    return std::max(v, 0.0) + std::log1p(std::exp(-std::abs(v)));
}
double sigmoid(double v) {
    return 1.0 / (1.0 + std::exp(-v));
}
double normal_cdf(double z) {
    return 0.5 * std::erfc(-z * M_SQRT1_2);
}
double normal_pdf(double z) {
    return 0.3989422804014327 * std::exp(-0.5 * z * z);
}

template <class R>
class NoisyTopkRouter final : public GateRouter<R> {
  public:
    explicit NoisyTopkRouter(const MoeConfig& cfg) : GateRouter<R>(cfg) {}
    const char* name() const override { return "noisy_topk"; }

    void forward(const RouterInput<R>& in, RoutingPlan<R>& plan, RouterLosses& losses) override;
    void backward(const RouterInput<R>& in, const RoutingPlan<R>& plan, const R* d_row_weight,
                  R* d_x) override;

    // Test hook: use these standard normal draws ([T, E], caller-owned, read at each training
    // forward) instead of Rng(in.seed), so a PyTorch fixture can use the same noise. Null
    // restores the generator.
    void set_noise(const R* noise) { fixed_noise_ = noise; }

  protected:
    void declare_extra(Arena& params, Arena& acts, const std::string& prefix,
                       int64_t max_tokens) override;
    void bind_extra(Arena& params, Arena& grads, Arena& acts) override;
    void init_extra(Rng& rng) override {
        std::fill(w_noise_, w_noise_ + this->E_ * this->d_, R(0));
    }

  private:
    // The gate's input: x, or x * jitter multipliers (the noise logits see the same input).
    const R* gate_input(const RouterInput<R>& in) const {
        return this->jittered_ ? this->jitter_x_ : in.x;
    }

    int w_noise_id_ = -1;
    R* w_noise_ = nullptr;      // [E, d]
    R* d_w_noise_ = nullptr;    // [E, d]
    R* raw_ = nullptr;          // [max_T, E] x @ w_noise^T
    R* sd_ = nullptr;           // [max_T, E] softplus(raw)
    R* eps_ = nullptr;          // [max_T, E] the standard normal draws (0 in evaluation)
    R* h_ = nullptr;            // [max_T, E] clean + eps * sd (forward only)
    R* z_ = nullptr;            // [max_T, E] argument of Phi in the load estimate
    int32_t* thr_ = nullptr;    // [max_T, E] expert whose H is the threshold, -1: P = 1
    int32_t* top_ = nullptr;    // [max_T, min(k + 1, E)] top of H, descending (forward only)
    R* d_h_ = nullptr;          // [max_T, E] backward scratch
    R* d_sd_ = nullptr;         // [max_T, E] backward scratch, becomes d raw
    R* d_xg_ = nullptr;         // [max_T, d] backward scratch, only with jitter
    double* p_ = nullptr;       // [max_T, E] P of the load estimate (forward only)
    double* load_ = nullptr;    // [E]
    double* d_load_ = nullptr;  // [E] d CV^2 / d load
    const R* fixed_noise_ = nullptr;
    bool training_ = false;
};

template <class R>
void NoisyTopkRouter<R>::declare_extra(Arena& params, Arena& acts, const std::string& prefix,
                                       int64_t max_tokens) {
    const int64_t E = this->E_, d = this->d_, top = std::min(this->K_ + 1, E);
    constexpr DType dt = dtype_of<R>();
    w_noise_id_ = params.add(prefix + "router.w_noise", {E, d}, dt);
    const std::string p = prefix + "router.";
    for (const char* n :
         {"noise_raw", "noise_sd", "noise_eps", "noise_h_scratch", "load_z", "d_h", "d_sd"})
        acts.add(p + n, {max_tokens, E}, dt);
    acts.add(p + "load_thr", {max_tokens, E}, DType::i32);
    acts.add(p + "noisy_top_scratch", {max_tokens, top}, DType::i32);
    if (this->cfg_.jitter > 0) acts.add(p + "d_xg", {max_tokens, d}, dt);
    acts.add(p + "load_p_scratch", {max_tokens, E}, DType::f64);
    acts.add(p + "load", {E}, DType::f64);
    acts.add(p + "d_load", {E}, DType::f64);
}

template <class R>
void NoisyTopkRouter<R>::bind_extra(Arena& params, Arena& grads, Arena& acts) {
    w_noise_ = params.get(w_noise_id_).ptr<R>();
    d_w_noise_ = grads.get(w_noise_id_).ptr<R>();
    const std::string p = this->prefix_ + "router.";
    raw_ = acts.get(p + "noise_raw").ptr<R>();
    sd_ = acts.get(p + "noise_sd").ptr<R>();
    eps_ = acts.get(p + "noise_eps").ptr<R>();
    h_ = acts.get(p + "noise_h_scratch").ptr<R>();
    z_ = acts.get(p + "load_z").ptr<R>();
    d_h_ = acts.get(p + "d_h").ptr<R>();
    d_sd_ = acts.get(p + "d_sd").ptr<R>();
    thr_ = acts.get(p + "load_thr").ptr<int32_t>();
    top_ = acts.get(p + "noisy_top_scratch").ptr<int32_t>();
    if (this->cfg_.jitter > 0) d_xg_ = acts.get(p + "d_xg").ptr<R>();
    p_ = acts.get(p + "load_p_scratch").ptr<double>();
    load_ = acts.get(p + "load").ptr<double>();
    d_load_ = acts.get(p + "d_load").ptr<double>();
}

template <class R>
void NoisyTopkRouter<R>::forward(const RouterInput<R>& in, RoutingPlan<R>& plan,
                                 RouterLosses& losses) {
    // in.x: [T, d]
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = this->E_, k = this->K_, top = std::min(k + 1, E);
    this->gate_forward(in);  // logits_ = clean
    nn::linear_forward(raw_, gate_input(in), w_noise_, static_cast<const R*>(nullptr), T, this->d_,
                       E);
    training_ = in.training;
    if (training_ && fixed_noise_) {
        std::copy(fixed_noise_, fixed_noise_ + T * E, eps_);
    } else if (training_) {
        // Token t's E normals come from the stream of global token first_token + t, so ranks
        // holding shares of a batch draw what one process draws.
        MOE_CHECK(in.first_token >= 0, "noisy_topk: first_token=", in.first_token, " < 0");
        const Rng noise(in.seed);
        parallel_for(T, T * E >= kParallelMin, [&](int64_t t) {
            Rng rng = noise.fork(uint64_t(in.first_token + t));
            for (int64_t e = 0; e < E; ++e) eps_[t * E + e] = R(rng.normal());
        });
    } else {
        std::fill(eps_, eps_ + T * E, R(0));
    }
    parallel_for(T * E, T * E >= kParallelMin, [&](int64_t i) {
        sd_[i] = R(softplus(double(raw_[i])));
        h_[i] = this->logits_[i] + eps_[i] * sd_[i];
    });

    // Top k (+1 for the load threshold) of H; the gates are a softmax over the kept k.
    GateRouter<R>::topk_rows(top_, h_, T, E, top);
    std::fill(this->probs_, this->probs_ + T * E, R(0));
    parallel_for(T, T * E >= kParallelMin, [&](int64_t t) {
        const R* h = h_ + t * E;
        const int32_t* tp = top_ + t * top;
        int32_t* ce = this->choice_expert_ + t * k;
        R* cw = this->choice_weight_ + t * k;
        const double hmax = double(h[tp[0]]);
        double sum = 0;
        for (int64_t j = 0; j < k; ++j) sum += std::exp(double(h[tp[j]]) - hmax);
        for (int64_t j = 0; j < k; ++j) {
            ce[j] = tp[j];
            cw[j] = R(std::exp(double(h[tp[j]]) - hmax) / sum);
            this->probs_[t * E + tp[j]] = cw[j];
        }
        // Load estimate: threshold = (k+1)-th of H for kept experts, k-th for the others.
        for (int64_t i = 0; i < E; ++i) thr_[t * E + i] = k < E ? tp[k - 1] : -1;
        if (k < E)
            for (int64_t j = 0; j < k; ++j) thr_[t * E + tp[j]] = tp[k];
        for (int64_t i = 0; i < E; ++i) {
            const int64_t ti = t * E + i;
            if (thr_[ti] < 0) {
                p_[ti] = 1.0;
                continue;
            }
            const double z = (double(this->logits_[ti]) - double(h[thr_[ti]])) / double(sd_[ti]);
            z_[ti] = R(z);
            p_[ti] = normal_cdf(z);
        }
    });
    // Summed serially in token order: the same load for any thread count.
    std::fill(load_, load_ + E, 0.0);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < E; ++i) load_[i] += p_[t * E + i];
    this->sum_over_batch(load_, E);  // the whole batch's load (Router::set_batch_group)

    const bool by_prob = cfg.drop_policy == DropPolicy::probability;
    std::copy(this->choice_weight_, this->choice_weight_ + T * k, this->choice_priority_);
    const Choices<R> ch = this->choices(T, k, by_prob ? this->choice_priority_ : nullptr);
    build_plan_from_choices(plan, ch, E, this->capacity(T, k), this->plan_scratch_);

    losses = RouterLosses{};
    losses.aux_loss = this->aux_loss_forward(plan, this->probs_, T, k);
    losses.z_loss = this->z_loss_forward(T);
    losses.importance_loss = this->importance_loss_forward(ch);
    losses.load_loss = GateRouter<R>::cv_squared(load_, E, d_load_);
    losses.weighted_total = cfg.aux_loss_coef * losses.aux_loss + cfg.z_loss_coef * losses.z_loss +
                            cfg.importance_coef * losses.importance_loss +
                            cfg.noisy_topk.load_coef * losses.load_loss;
}

template <class R>
void NoisyTopkRouter<R>::backward(const RouterInput<R>& in, const RoutingPlan<R>& plan,
                                  const R* d_row_weight, R* d_x) {
    // d_row_weight: [plan.rows()]; d_x: [T, d] accumulated
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = this->E_, k = this->K_, d = this->d_;
    MOE_CHECK(T == plan.T, "noisy_topk backward: T=", T, " but the plan has T=", plan.T);
    this->scatter_row_grads(plan, d_row_weight, T, k);
    const Choices<R> ch = this->choices(T, k, nullptr);
    this->importance_loss_backward(this->d_choice_weight_, ch, cfg.importance_coef);
    // The aux loss sees the gates as probabilities: only the kept entries depend on H.
    std::fill(this->d_probs_, this->d_probs_ + T * E, R(0));
    this->aux_loss_backward(this->d_probs_, T, cfg.aux_loss_coef);
    for (int64_t c = 0; c < T * k; ++c)
        this->d_choice_weight_[c] += this->d_probs_[(c / k) * E + this->choice_expert_[c]];

    // Softmax over the kept H: dH_j = g_j (dg_j - sum_l dg_l g_l).
    std::fill(d_h_, d_h_ + T * E, R(0));
    std::fill(d_sd_, d_sd_ + T * E, R(0));
    std::fill(this->d_logits_, this->d_logits_ + T * E, R(0));
    parallel_for(T, T * E >= kParallelMin, [&](int64_t t) {
        const R* g = this->choice_weight_ + t * k;
        const R* dg = this->d_choice_weight_ + t * k;
        double dot = 0;
        for (int64_t j = 0; j < k; ++j) dot += double(dg[j]) * double(g[j]);
        for (int64_t j = 0; j < k; ++j)
            d_h_[t * E + this->choice_expert_[t * k + j]] +=
                R(double(g[j]) * (double(dg[j]) - dot));
    });
    // Load: P = Phi(z), z = (clean_i - H_thr) / sd_i.
    // Every write stays in token t's row, so tokens run in parallel.
    if (cfg.noisy_topk.load_coef != 0) {
        parallel_for(T, T * E >= kParallelMin, [&](int64_t t) {
            for (int64_t i = 0; i < E; ++i) {
                const int64_t ti = t * E + i;
                if (thr_[ti] < 0) continue;
                const double z = double(z_[ti]), sd = double(sd_[ti]);
                const double dz = cfg.noisy_topk.load_coef * d_load_[i] * normal_pdf(z);
                this->d_logits_[ti] += R(dz / sd);
                d_h_[t * E + thr_[ti]] -= R(dz / sd);
                d_sd_[ti] -= R(dz * z / sd);
            }
        });
    }
    // H = clean + eps * sd; sd = softplus(raw).
    parallel_for(T * E, T * E >= kParallelMin, [&](int64_t i) {
        this->d_logits_[i] += d_h_[i];
        const double dsd = double(d_sd_[i]) + double(d_h_[i]) * double(eps_[i]);
        d_sd_[i] = R(dsd * sigmoid(double(raw_[i])));  // now d raw
    });
    this->z_loss_backward(this->d_logits_, T, cfg.z_loss_coef);
    this->gate_backward(in, this->d_logits_, d_x);
    // The noise logits: d w_noise += d_raw^T xg, d x += d_raw @ w_noise (through the jitter).
    const R* xg = gate_input(in);
    if (!this->jittered_) {
        nn::linear_backward(d_x, d_w_noise_, static_cast<R*>(nullptr), d_sd_, xg, w_noise_, T, d,
                            E);
        return;
    }
    std::fill(d_xg_, d_xg_ + T * d, R(0));
    nn::linear_backward(d_xg_, d_w_noise_, static_cast<R*>(nullptr), d_sd_, xg, w_noise_, T, d, E);
    for (int64_t i = 0; i < T * d; ++i) d_x[i] += d_xg_[i] * this->jitter_noise_[i];
}

}  // namespace

template <class R>
std::unique_ptr<Router<R>> make_noisy_topk_router(const MoeConfig& cfg) {
    return std::make_unique<NoisyTopkRouter<R>>(cfg);
}

// Test hook (declared by the tests that use it): fixed noise for a noisy_topk router.
template <class R>
void set_noisy_topk_noise(Router<R>& router, const R* noise) {
    auto* r = dynamic_cast<NoisyTopkRouter<R>*>(&router);
    MOE_CHECK(r != nullptr, "set_noisy_topk_noise: router is ", router.name(), ", not noisy_topk");
    r->set_noise(noise);
}

template std::unique_ptr<Router<float>> make_noisy_topk_router<float>(const MoeConfig&);
template std::unique_ptr<Router<double>> make_noisy_topk_router<double>(const MoeConfig&);
template void set_noisy_topk_noise<float>(Router<float>&, const float*);
template void set_noisy_topk_noise<double>(Router<double>&, const double*);

}  // namespace moe::sparse
