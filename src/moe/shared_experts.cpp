// SharedExperts: S SwiGLU MLPs on every token, optionally gated (see shared_experts.h).
#include "moe/shared_experts.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/profile.h"
#include "nn/mlp.h"

namespace moe::sparse {

template <class R>
SharedExperts<R>::SharedExperts(const MoeConfig& cfg, int64_t max_tokens)
    : max_tokens_(max_tokens),
      d_(cfg.d_model),
      S_(cfg.n_shared),
      Hs_(cfg.d_shared > 0 ? cfg.d_shared : cfg.d_expert),
      gated_(cfg.shared_gate) {}

template <class R>
void SharedExperts<R>::declare(Arena& params, const std::string& prefix) {
    prefix_ = prefix + "shared.";
    if (S_ == 0) return;
    constexpr DType dt = dtype_of<R>();
    w1_id_ = params.add(prefix_ + "w1", {S_, Hs_, d_}, dt);
    w3_id_ = params.add(prefix_ + "w3", {S_, Hs_, d_}, dt);
    w2_id_ = params.add(prefix_ + "w2", {S_, d_, Hs_}, dt);
    if (gated_) gate_id_ = params.add(prefix_ + "gate", {d_}, dt);
}

template <class R>
void SharedExperts<R>::declare_buffers(Arena& acts) {
    if (S_ == 0) return;
    constexpr DType dt = dtype_of<R>();
    const int64_t T = max_tokens_;
    const std::string& s = prefix_;
    acts.add(s + "h1", {S_, T, Hs_}, dt);
    acts.add(s + "h3", {S_, T, Hs_}, dt);
    acts.add(s + "act", {S_, T, Hs_}, dt);
    // The sum of the shared experts is needed by backward only for the gate's gradient.
    acts.add(s + (gated_ ? "out" : "out_scratch"), {T, d_}, dt);
    acts.add(s + "tmp_scratch", {S_ > 1 ? T : 1, d_}, dt);
    acts.add(s + "gate_values", {T}, dt);
    acts.add(s + "d_out", {T, d_}, dt);
    acts.add(s + "scratch", {3, T, Hs_}, dt);
}

template <class R>
void SharedExperts<R>::bind(Arena& params, Arena& grads, Arena& acts) {
    if (S_ == 0) return;
    MOE_CHECK(w1_id_ >= 0, "SharedExperts::bind before declare");
    w1_ = params.get(w1_id_).ptr<R>();
    w3_ = params.get(w3_id_).ptr<R>();
    w2_ = params.get(w2_id_).ptr<R>();
    d_w1_ = grads.get(w1_id_).ptr<R>();
    d_w3_ = grads.get(w3_id_).ptr<R>();
    d_w2_ = grads.get(w2_id_).ptr<R>();
    if (gated_) {
        gate_ = params.get(gate_id_).ptr<R>();
        d_gate_ = grads.get(gate_id_).ptr<R>();
    }
    const std::string& s = prefix_;
    h1_ = acts.get(s + "h1").ptr<R>();
    h3_ = acts.get(s + "h3").ptr<R>();
    act_ = acts.get(s + "act").ptr<R>();
    sum_ = acts.get(s + (gated_ ? "out" : "out_scratch")).ptr<R>();
    tmp_ = acts.get(s + "tmp_scratch").ptr<R>();
    g_ = acts.get(s + "gate_values").ptr<R>();
    d_sum_ = acts.get(s + "d_out").ptr<R>();
    scratch_ = acts.get(s + "scratch").ptr<R>();
}

template <class R>
void SharedExperts<R>::init_weights(Rng& rng, double std, double out_std) {
    if (S_ == 0) return;
    const int64_t n = S_ * Hs_ * d_;
    for (int64_t i = 0; i < n; ++i) w1_[i] = R(std * double(rng.normal()));
    for (int64_t i = 0; i < n; ++i) w3_[i] = R(std * double(rng.normal()));
    for (int64_t i = 0; i < n; ++i) w2_[i] = R(out_std * double(rng.normal()));
    if (gate_) std::fill(gate_, gate_ + d_, R(0));
}

template <class R>
void SharedExperts<R>::forward(R* out, const R* x, int64_t T) {
    // out: [T, d] += g * sum_s shared_s(x); x: [T, d]
    if (S_ == 0) return;
    MOE_CHECK(T >= 1 && T <= max_tokens_, "SharedExperts::forward: T=", T,
              " outside [1, max_tokens=", max_tokens_, "]");
    MOE_PROFILE_SCOPE("shared_experts_fwd");
    x_ = x;
    T_ = T;
    const int64_t wsz = Hs_ * d_, bsz = max_tokens_ * Hs_;
    for (int64_t s = 0; s < S_; ++s) {
        R* o = s == 0 ? sum_ : tmp_;
        nn::swiglu_mlp_forward(o, h1_ + s * bsz, h3_ + s * bsz, act_ + s * bsz, x, w1_ + s * wsz,
                               w3_ + s * wsz, w2_ + s * wsz, T, d_, Hs_);
        if (s > 0)
            for (int64_t i = 0; i < T * d_; ++i) sum_[i] += tmp_[i];
    }
    if (!gated_) {
        for (int64_t i = 0; i < T * d_; ++i) out[i] += sum_[i];
        return;
    }
    for (int64_t t = 0; t < T; ++t) {
        double z = 0;
        for (int64_t j = 0; j < d_; ++j) z += double(x[t * d_ + j]) * double(gate_[j]);
        const R g = R(1.0 / (1.0 + std::exp(-z)));
        g_[t] = g;
        for (int64_t j = 0; j < d_; ++j) out[t * d_ + j] += g * sum_[t * d_ + j];
    }
}

template <class R>
void SharedExperts<R>::backward(const R* d_out, R* d_x) {
    // d_out: [T, d]; d_x: [T, d] accumulated
    if (S_ == 0) return;
    MOE_CHECK(x_ != nullptr, "SharedExperts::backward without a forward");
    MOE_PROFILE_SCOPE("shared_experts_bwd");
    const int64_t T = T_;
    const R* d_sh = d_out;
    if (gated_) {
        // out += g * s, g = sigmoid(z), z = x . w:  ds = g d_out, dz = (d_out . s) g (1 - g),
        // dw += dz x, dx += dz w.
        for (int64_t t = 0; t < T; ++t) {
            const R* go = d_out + t * d_;
            const R* so = sum_ + t * d_;
            const double g = double(g_[t]);
            double dg = 0;
            for (int64_t j = 0; j < d_; ++j) dg += double(go[j]) * double(so[j]);
            const R dz = R(dg * g * (1.0 - g));
            for (int64_t j = 0; j < d_; ++j) {
                d_sum_[t * d_ + j] = R(g) * go[j];
                d_gate_[j] += dz * x_[t * d_ + j];
                d_x[t * d_ + j] += dz * gate_[j];
            }
        }
        d_sh = d_sum_;
    }
    const int64_t wsz = Hs_ * d_, bsz = max_tokens_ * Hs_;
    for (int64_t s = 0; s < S_; ++s)
        nn::swiglu_mlp_backward(d_x, d_w1_ + s * wsz, d_w3_ + s * wsz, d_w2_ + s * wsz, scratch_,
                                d_sh, x_, h1_ + s * bsz, h3_ + s * bsz, act_ + s * bsz,
                                w1_ + s * wsz, w3_ + s * wsz, w2_ + s * wsz, T, d_, Hs_);
}

template class SharedExperts<float>;
template class SharedExperts<double>;

}  // namespace moe::sparse
