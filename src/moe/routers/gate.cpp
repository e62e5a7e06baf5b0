// The shared linear gate of the token-choice routers: declaration of parameters and
// buffers, logits with optional jitter, and the balancing losses. See gate.h.
//
// Per-token loops run over the threads (core/parallel_for.h) when a batch has at least kParallelMin logits;
// every reduction over tokens (P_i, importance, the losses) is a serial loop in double,
// so results are identical for any thread count. At T=4096, E=64 these loops are about
// 1% of the layer's time (the expert GEMMs are 25 GFLOP), so they stay simple.
#include "moe/routers/gate.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/parallel_for.h"
#include "kernels/softmax.h"
#include "nn/linear.h"

namespace moe::sparse {

namespace {
// 16k logits (e.g. 256 tokens x 64 experts) is ~20 us of exp/compare work: below that a
// fork/join costs as much as it saves.
constexpr int64_t kParallelMin = 16384;
}  // namespace

template <class R>
GateRouter<R>::GateRouter(const MoeConfig& cfg) : Router<R>(cfg) {}

template <class R>
void GateRouter<R>::declare(Arena& params, Arena& acts, const std::string& prefix,
                            int64_t max_tokens) {
    const MoeConfig& cfg = this->cfg_;
    MOE_CHECK(max_tokens > 0, "GateRouter::declare: max_tokens must be > 0, got ", max_tokens);
    E_ = cfg.n_experts;
    d_ = cfg.d_model;
    K_ = choices_per_token();
    MOE_CHECK(K_ >= 1 && K_ <= E_, "GateRouter::declare: ", K_, " choices per token with ", E_,
              " experts");
    max_tokens_ = max_tokens;
    prefix_ = prefix;
    constexpr DType dt = dtype_of<R>();
    w_id_ = params.add(prefix + "router.w", {E_, d_}, dt);
    b_id_ = params.add(prefix + "router.b", {E_}, dt);
    const std::string p = prefix + "router.";
    acts.add(p + "logits", {max_tokens, E_}, dt);
    acts.add(p + "probs", {max_tokens, E_}, dt);
    acts.add(p + "d_logits", {max_tokens, E_}, dt);
    acts.add(p + "d_probs", {max_tokens, E_}, dt);
    acts.add(p + "lse", {max_tokens}, dt);
    acts.add(p + "choice_expert", {max_tokens, K_}, DType::i32);
    acts.add(p + "choice_weight", {max_tokens, K_}, dt);
    acts.add(p + "choice_priority", {max_tokens, K_}, dt);
    acts.add(p + "d_choice_weight", {max_tokens, K_}, dt);
    acts.add(p + "plan_scratch", {E_ + max_tokens * K_}, DType::i64);
    acts.add(p + "f", {2 * E_ + 1}, DType::f64);  // f_i, then P_i sums and T (aux loss)
    acts.add(p + "importance", {E_}, DType::f64);
    acts.add(p + "d_importance", {E_}, DType::f64);
    if (cfg.jitter > 0) {
        acts.add(p + "jitter_noise", {max_tokens, d_}, dt);
        acts.add(p + "jitter_x", {max_tokens, d_}, dt);
        acts.add(p + "jitter_scratch", {max_tokens, d_}, dt);
    }
    declare_extra(params, acts, prefix, max_tokens);
}

template <class R>
void GateRouter<R>::bind(Arena& params, Arena& grads, Arena& acts) {
    w_ = params.get(w_id_).ptr<R>();
    b_ = params.get(b_id_).ptr<R>();
    d_w_ = grads.get(w_id_).ptr<R>();
    d_b_ = grads.get(b_id_).ptr<R>();
    const std::string p = prefix_ + "router.";
    logits_ = acts.get(p + "logits").ptr<R>();
    probs_ = acts.get(p + "probs").ptr<R>();
    d_logits_ = acts.get(p + "d_logits").ptr<R>();
    d_probs_ = acts.get(p + "d_probs").ptr<R>();
    lse_ = acts.get(p + "lse").ptr<R>();
    choice_expert_ = acts.get(p + "choice_expert").ptr<int32_t>();
    choice_weight_ = acts.get(p + "choice_weight").ptr<R>();
    choice_priority_ = acts.get(p + "choice_priority").ptr<R>();
    d_choice_weight_ = acts.get(p + "d_choice_weight").ptr<R>();
    plan_scratch_ = acts.get(p + "plan_scratch").ptr<int64_t>();
    f_ = acts.get(p + "f").ptr<double>();
    importance_ = acts.get(p + "importance").ptr<double>();
    d_importance_ = acts.get(p + "d_importance").ptr<double>();
    if (this->cfg_.jitter > 0) {
        jitter_noise_ = acts.get(p + "jitter_noise").ptr<R>();
        jitter_x_ = acts.get(p + "jitter_x").ptr<R>();
        jitter_scratch_ = acts.get(p + "jitter_scratch").ptr<R>();
    }
    bind_extra(params, grads, acts);
}

template <class R>
void GateRouter<R>::init_weights(Rng& rng) {
    MOE_CHECK(w_ != nullptr, "GateRouter::init_weights before bind");
    for (int64_t i = 0; i < E_ * d_; ++i) w_[i] = R(0.02 * double(rng.normal()));
    std::fill(b_, b_ + E_, R(0));
    init_extra(rng);
}

template <class R>
void GateRouter<R>::gate_forward(const RouterInput<R>& in) {
    // in.x: [T, d]; writes logits_ [T, E]
    const int64_t T = in.T;
    MOE_CHECK(T >= 1 && T <= max_tokens_, this->name(), ": T=", T,
              " outside [1, max_tokens=", max_tokens_, "]");
    MOE_CHECK(w_ != nullptr, this->name(), ": forward before bind");
    const R* xg = in.x;
    jittered_ = in.training && this->cfg_.jitter > 0;
    if (jittered_) {
        // Token t's d multipliers come from a stream of its own, that of global token
        // first_token + t (RouterInput): ranks holding shares of a batch draw what one process
        // draws, at no cost for skipping the other ranks' tokens.
        MOE_CHECK(in.first_token >= 0, this->name(), ": first_token=", in.first_token, " < 0");
        const Rng jitter_stream = Rng(in.seed).fork(1);
        const double j = this->cfg_.jitter;
        const int64_t d = d_;
        parallel_for(T, T * d >= kParallelMin, [&](int64_t t) {
            Rng rng = jitter_stream.fork(uint64_t(in.first_token + t));
            for (int64_t i = t * d; i < (t + 1) * d; ++i) {
                jitter_noise_[i] = R(1.0 - j + 2.0 * j * double(rng.uniform()));
                jitter_x_[i] = in.x[i] * jitter_noise_[i];
            }
        });
        xg = jitter_x_;
    }
    nn::linear_forward(logits_, xg, w_, b_, T, d_, E_);
}

template <class R>
void GateRouter<R>::gate_backward(const RouterInput<R>& in, const R* d_logits, R* d_x) {
    // d_logits: [T, E]; d_x: [T, d] accumulated
    const int64_t T = in.T;
    const R* xg = jittered_ ? jitter_x_ : in.x;
    if (!jittered_) {
        nn::linear_backward(d_x, d_w_, d_b_, d_logits, xg, w_, T, d_, E_);
        return;
    }
    std::fill(jitter_scratch_, jitter_scratch_ + T * d_, R(0));
    nn::linear_backward(jitter_scratch_, d_w_, d_b_, d_logits, xg, w_, T, d_, E_);
    for (int64_t i = 0; i < T * d_; ++i) d_x[i] += jitter_scratch_[i] * jitter_noise_[i];
}

template <class R>
Choices<R> GateRouter<R>::choices(int64_t T, int64_t k, const R* priority) const {
    MOE_CHECK(k <= K_, this->name(), ": ", k, " choices per token but buffers hold ", K_);
    Choices<R> ch;
    ch.T = T;
    ch.k = k;
    ch.expert = choice_expert_;
    ch.weight = choice_weight_;
    ch.priority = priority;
    return ch;
}

template <class R>
int64_t GateRouter<R>::capacity(int64_t T, int64_t k) const {
    const double cf = this->cfg_.capacity_factor;
    if (cf <= 0) return -1;
    return int64_t(std::ceil(cf * double(T * k) / double(E_)));
}

template <class R>
void GateRouter<R>::scatter_row_grads(const RoutingPlan<R>& plan, const R* d_row_weight, int64_t T,
                                      int64_t k) {
    // d_row_weight: [plan.rows()] -> d_choice_weight_ [T, k]
    std::fill(d_choice_weight_, d_choice_weight_ + T * k, R(0));
    const int64_t rows = plan.rows();
    for (int64_t r = 0; r < rows; ++r) {
        const int32_t c = plan.row_choice[r];
        MOE_DCHECK(c >= 0 && c < T * k, "scatter_row_grads: bad choice ", c);
        d_choice_weight_[c] += d_row_weight[r];
    }
}

template <class R>
void GateRouter<R>::topk_rows(int32_t* idx, const R* v, int64_t T, int64_t E, int64_t k) {
    // idx: [T, k], v: [T, E]
    MOE_CHECK(k >= 1 && k <= E, "topk_rows: k=", k, " with E=", E);
    parallel_for(T, T * E >= kParallelMin, [&](int64_t t) {
        const R* row = v + t * E;
        int32_t* out = idx + t * k;
        int64_t n = 0;  // entries kept so far, in descending order
        for (int64_t e = 0; e < E; ++e) {
            const R x = row[e];
            if (n == k && !(x > row[out[k - 1]])) continue;  // strict: a tie keeps the lower index
            int64_t p = n < k ? n : k - 1;                   // slot that gets freed or filled
            while (p > 0 && x > row[out[p - 1]]) {
                out[p] = out[p - 1];
                --p;
            }
            out[p] = int32_t(e);
            if (n < k) ++n;
        }
    });
}

template <class R>
double GateRouter<R>::z_loss_forward(int64_t T) {
    double total = 0;
    for (int64_t t = 0; t < T; ++t) {
        const R* l = logits_ + t * E_;
        double m = double(l[0]);
        for (int64_t e = 1; e < E_; ++e) m = std::max(m, double(l[e]));
        double s = 0;
        for (int64_t e = 0; e < E_; ++e) s += std::exp(double(l[e]) - m);
        const double lse = m + std::log(s);
        lse_[t] = R(lse);
        total += lse * lse;
    }
    // Over the whole batch: [sum of lse^2, tokens] summed over the batch group.
    double sums[2] = {total, double(T)};
    this->sum_over_batch(sums, 2);
    batch_T_ = sums[1];
    return sums[0] / batch_T_;
}

template <class R>
void GateRouter<R>::softmax_gate_backward(const RouterInput<R>& in, const R* d_probs, R* d_x) {
    const int64_t T = in.T;
    std::fill(d_logits_, d_logits_ + T * E_, R(0));
    kernels::softmax_backward(d_logits_, d_probs, probs_, T, E_);
    z_loss_backward(d_logits_, T, this->cfg_.z_loss_coef);
    gate_backward(in, d_logits_, d_x);
}

template <class R>
void GateRouter<R>::z_loss_backward(R* d_logits, int64_t T, double coef) const {
    // d_logits: [T, E]
    if (coef == 0) return;
    for (int64_t t = 0; t < T; ++t) {
        const double lse = double(lse_[t]);
        const double g = coef * 2.0 * lse / batch_T_;
        const R* l = logits_ + t * E_;
        R* dl = d_logits + t * E_;
        for (int64_t e = 0; e < E_; ++e) dl[e] += R(g * std::exp(double(l[e]) - lse));
    }
}

template <class R>
double GateRouter<R>::aux_loss_forward(const RoutingPlan<R>& plan, const R* probs, int64_t T,
                                       int64_t k) {
    // probs: [T, E]
    // f_ holds the kept rows of each expert, then P_i's numerator, then T: one sum over
    // the batch group for all three (f_ has room for 2E + 1 values).
    double* counts = f_;
    double* p_sums = f_ + E_;
    for (int64_t i = 0; i < E_; ++i) counts[i] = double(plan.count(i));
    for (int64_t i = 0; i < E_; ++i) {
        double p = 0;
        for (int64_t t = 0; t < T; ++t) p += double(probs[t * E_ + i]);
        p_sums[i] = p;
    }
    f_[2 * E_] = double(T);
    this->sum_over_batch(f_, 2 * E_ + 1);
    aux_T_ = f_[2 * E_];
    const double choices = aux_T_ * double(k);
    double aux = 0;
    for (int64_t i = 0; i < E_; ++i) {
        counts[i] /= choices;  // f_i
        aux += counts[i] * p_sums[i] / aux_T_;
    }
    return double(E_) * aux;
}

template <class R>
void GateRouter<R>::aux_loss_backward(R* d_probs, int64_t T, double coef) const {
    // d_probs: [T, E]
    if (coef == 0) return;
    for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < E_; ++i)
            d_probs[t * E_ + i] += R(coef * double(E_) * f_[i] / aux_T_);
}

template <class R>
double GateRouter<R>::cv_squared(const double* v, int64_t n, double* d_v) {
    double mean = 0;
    for (int64_t i = 0; i < n; ++i) mean += v[i];
    mean /= double(n);
    if (mean == 0) {
        if (d_v) std::fill(d_v, d_v + n, 0.0);
        return 0;
    }
    double var = 0;
    for (int64_t i = 0; i < n; ++i) var += (v[i] - mean) * (v[i] - mean);
    var /= double(n);
    // d var / d v_i = 2 (v_i - mean) / n (the mean's own term sums to zero);
    // d mean / d v_i = 1 / n.
    if (d_v)
        for (int64_t i = 0; i < n; ++i)
            d_v[i] = 2.0 * (v[i] - mean) / (double(n) * mean * mean) -
                     2.0 * var / (double(n) * mean * mean * mean);
    return var / (mean * mean);
}

template <class R>
double GateRouter<R>::importance_loss_forward(const Choices<R>& ch) {
    std::fill(importance_, importance_ + E_, 0.0);
    for (int64_t c = 0; c < ch.T * ch.k; ++c)
        if (ch.expert[c] >= 0) importance_[ch.expert[c]] += double(ch.weight[c]);
    this->sum_over_batch(importance_, E_);
    return cv_squared(importance_, E_, d_importance_);
}

template <class R>
void GateRouter<R>::importance_loss_backward(R* d_choice_weight, const Choices<R>& ch,
                                             double coef) const {
    // d_choice_weight: [T, k]
    if (coef == 0) return;
    for (int64_t c = 0; c < ch.T * ch.k; ++c)
        if (ch.expert[c] >= 0) d_choice_weight[c] += R(coef * d_importance_[ch.expert[c]]);
}

template class GateRouter<float>;
template class GateRouter<double>;

}  // namespace moe::sparse
