// SoftMoe: slots as softmax mixtures of tokens, outputs as softmax mixtures of slots (see
// soft_moe.h).
//
// Per group the work is a handful of GEMMs: logits (L x d x n), slots (n x L x d), the
// expert bank on all groups' slots, and the combine (L x n x d); backward three more of
// each size. The products that involve one expert's S slots of one group are issued per
// (group, expert) block because the expert bank wants each expert's rows contiguous across
// groups, while a group's slots are contiguous within it. The two softmaxes are O(T n),
// against O(T n d) for any GEMM, so they are plain loops.
#include "moe/soft_moe.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "kernels/gemm.h"
#include "kernels/softmax.h"

namespace moe::sparse {

template <class R>
SoftMoe<R>::SoftMoe(const MoeConfig& cfg, int64_t max_tokens, int64_t seq_len)
    : cfg_(cfg),
      max_tokens_(max_tokens),
      seq_len_(seq_len),
      E_(cfg.n_experts),
      S_(cfg.soft.slots_per_expert),
      n_(cfg.n_experts * cfg.soft.slots_per_expert),
      d_(cfg.d_model) {
    MOE_REQUIRE(!cfg.causal,
                "router 'soft' mixes every token of a sequence into each slot, including later "
                "ones; it cannot be used in a causal model (set moe.router to a token-choice "
                "router)");
    MOE_REQUIRE(cfg.soft.slots_per_expert >= 1, "moe.slots_per_expert (", cfg.soft.slots_per_expert,
                ") must be >= 1");
    MOE_CHECK(max_tokens >= 1 && seq_len >= 0, "SoftMoe: max_tokens=", max_tokens,
              " seq_len=", seq_len);
    MOE_CHECK(E_ >= 1 && d_ >= 1, "SoftMoe: n_experts=", E_, " d_model=", d_);
    max_groups_ = seq_len > 0 ? (max_tokens + seq_len - 1) / seq_len : 1;
    experts_ = std::make_unique<ExpertBank<R>>(cfg.expert, E_, d_, cfg.d_expert);
}

template <class R>
void SoftMoe<R>::declare(Arena& params, Arena& acts, const std::string& prefix) {
    prefix_ = prefix;
    constexpr DType dt = dtype_of<R>();
    phi_id_ = params.add(prefix + "router.phi", {d_, n_}, dt);
    experts_->declare(params, prefix + "experts.");
    const int64_t T = max_tokens_, rows = max_groups_ * n_;
    const std::string p = prefix + "soft.";
    acts.add(p + "dispatch", {T, n_}, dt);
    acts.add(p + "combine", {T, n_}, dt);
    acts.add(p + "xs", {rows, d_}, dt);
    acts.add(p + "ys", {rows, d_}, dt);
    acts.add(p + "offsets", {E_ + 1}, DType::i64);
    acts.add(p + "d_logits", {T, n_}, dt);
    acts.add(p + "d_dispatch", {T, n_}, dt);
    acts.add(p + "d_combine", {T, n_}, dt);
    acts.add(p + "d_xs", {rows, d_}, dt);
    acts.add(p + "d_ys", {rows, d_}, dt);
    acts.add(p + "col_scratch", {n_}, DType::f64);
    experts_->declare_buffers(acts, prefix + "experts.", rows);
}

template <class R>
void SoftMoe<R>::bind(Arena& params, Arena& grads, Arena& acts) {
    MOE_CHECK(phi_id_ >= 0, "SoftMoe::bind before declare");
    phi_ = params.get(phi_id_).ptr<R>();
    d_phi_ = grads.get(phi_id_).ptr<R>();
    experts_->bind(params, grads, acts);
    const std::string p = prefix_ + "soft.";
    disp_ = acts.get(p + "dispatch").ptr<R>();
    comb_ = acts.get(p + "combine").ptr<R>();
    xs_ = acts.get(p + "xs").ptr<R>();
    ys_ = acts.get(p + "ys").ptr<R>();
    offsets_ = acts.get(p + "offsets").ptr<int64_t>();
    d_logits_ = acts.get(p + "d_logits").ptr<R>();
    d_disp_ = acts.get(p + "d_dispatch").ptr<R>();
    d_comb_ = acts.get(p + "d_combine").ptr<R>();
    d_xs_ = acts.get(p + "d_xs").ptr<R>();
    d_ys_ = acts.get(p + "d_ys").ptr<R>();
    col_ = acts.get(p + "col_scratch").ptr<double>();
}

template <class R>
void SoftMoe<R>::init_weights(Rng& rng, double std, double out_std) {
    MOE_CHECK(phi_ != nullptr, "SoftMoe::init_weights before bind");
    Rng r_phi = rng.fork(0), r_experts = rng.fork(1);
    for (int64_t i = 0; i < d_ * n_; ++i) phi_[i] = R(std * double(r_phi.normal()));
    experts_->init_weights(r_experts, std, out_std);
}

template <class R>
void SoftMoe<R>::forward(R* out, const R* x, int64_t T) {
    // out: [T, d] written; x: [T, d]
    MOE_CHECK(phi_ != nullptr, "SoftMoe::forward before bind");
    MOE_CHECK(T >= 1 && T <= max_tokens_, "SoftMoe::forward: T=", T,
              " outside [1, max_tokens=", max_tokens_, "]");
    const int64_t L = seq_len_ > 0 ? seq_len_ : T;
    MOE_CHECK(T % L == 0, "SoftMoe::forward: T=", T, " is not a multiple of seq_len=", L);
    const int64_t G = T / L, n = n_, d = d_, S = S_;
    MOE_CHECK(G <= max_groups_, "SoftMoe::forward: ", G, " groups but buffers hold ", max_groups_);
    x_ = x;
    T_ = T;
    G_ = G;
    L_ = L;

    // Logits into the dispatch buffer; C = row softmax of them; then D = column softmax
    // of each group, in place.
    kernels::gemm(false, false, T, n, d, R(1), x, d, phi_, n, R(0), disp_, n);
    kernels::softmax_forward(comb_, disp_, T, n);
    for (int64_t g = 0; g < G; ++g) {
        R* D = disp_ + g * L * n;
        std::fill(col_, col_ + n, -HUGE_VAL);
        for (int64_t t = 0; t < L; ++t)
            for (int64_t j = 0; j < n; ++j) col_[j] = std::max(col_[j], double(D[t * n + j]));
        for (int64_t t = 0; t < L; ++t)
            for (int64_t j = 0; j < n; ++j)
                D[t * n + j] = R(std::exp(double(D[t * n + j]) - col_[j]));
        std::fill(col_, col_ + n, 0.0);
        for (int64_t t = 0; t < L; ++t)
            for (int64_t j = 0; j < n; ++j) col_[j] += double(D[t * n + j]);
        for (int64_t j = 0; j < n; ++j) col_[j] = 1.0 / col_[j];
        for (int64_t t = 0; t < L; ++t)
            for (int64_t j = 0; j < n; ++j) D[t * n + j] = R(double(D[t * n + j]) * col_[j]);
    }

    // Slots: for expert e and group g, xs[e's S slots of g] = D_g[:, eS:(e+1)S]^T X_g.
    for (int64_t e = 0; e <= E_; ++e) offsets_[e] = e * G * S;
    for (int64_t g = 0; g < G; ++g)
        for (int64_t e = 0; e < E_; ++e)
            kernels::gemm(true, false, S, d, L, R(1), disp_ + g * L * n + e * S, n, x + g * L * d,
                          d, R(0), xs_ + slot_row(e, g, G) * d, d);
    experts_->forward(ys_, xs_, offsets_);
    // out_g = C_g Y_g, summed over the experts' column blocks.
    for (int64_t g = 0; g < G; ++g)
        for (int64_t e = 0; e < E_; ++e)
            kernels::gemm(false, false, L, d, S, R(1), comb_ + g * L * n + e * S, n,
                          ys_ + slot_row(e, g, G) * d, d, e == 0 ? R(0) : R(1), out + g * L * d, d);
}

template <class R>
void SoftMoe<R>::backward(const R* d_out, R* d_x) {
    // d_out: [T, d]; d_x: [T, d] accumulated
    MOE_CHECK(x_ != nullptr, "SoftMoe::backward without a forward");
    const int64_t T = T_, G = G_, L = L_, n = n_, d = d_, S = S_;
    // Combine: dC_g = dOut_g Y_g^T, dY_g = C_g^T dOut_g.
    for (int64_t g = 0; g < G; ++g)
        for (int64_t e = 0; e < E_; ++e) {
            const int64_t r = slot_row(e, g, G);
            kernels::gemm(false, true, L, S, d, R(1), d_out + g * L * d, d, ys_ + r * d, d, R(0),
                          d_comb_ + g * L * n + e * S, n);
            kernels::gemm(true, false, S, d, L, R(1), comb_ + g * L * n + e * S, n,
                          d_out + g * L * d, d, R(0), d_ys_ + r * d, d);
        }
    std::fill(d_xs_, d_xs_ + G * n * d, R(0));
    experts_->backward(d_xs_, d_ys_, xs_, offsets_);
    // Slots = D^T X: dD_g = X_g dXs_g^T, dX_g += D_g dXs_g.
    for (int64_t g = 0; g < G; ++g)
        for (int64_t e = 0; e < E_; ++e) {
            const int64_t r = slot_row(e, g, G);
            kernels::gemm(false, true, L, S, d, R(1), x_ + g * L * d, d, d_xs_ + r * d, d, R(0),
                          d_disp_ + g * L * n + e * S, n);
            kernels::gemm(false, false, L, d, S, R(1), disp_ + g * L * n + e * S, n, d_xs_ + r * d,
                          d, R(1), d_x + g * L * d, d);
        }
    // Both softmaxes back to the logits: rows for C, columns of each group for D,
    // dl[t, j] += D[t, j] (dD[t, j] - sum_t' dD[t', j] D[t', j]).
    std::fill(d_logits_, d_logits_ + T * n, R(0));
    kernels::softmax_backward(d_logits_, d_comb_, comb_, T, n);
    for (int64_t g = 0; g < G; ++g) {
        const R* D = disp_ + g * L * n;
        const R* dD = d_disp_ + g * L * n;
        R* dl = d_logits_ + g * L * n;
        std::fill(col_, col_ + n, 0.0);
        for (int64_t t = 0; t < L; ++t)
            for (int64_t j = 0; j < n; ++j) col_[j] += double(dD[t * n + j]) * double(D[t * n + j]);
        for (int64_t t = 0; t < L; ++t)
            for (int64_t j = 0; j < n; ++j)
                dl[t * n + j] += R(double(D[t * n + j]) * (double(dD[t * n + j]) - col_[j]));
    }
    // logits = X phi.
    kernels::gemm(false, true, T, d, n, R(1), d_logits_, n, phi_, n, R(1), d_x, d);
    kernels::gemm(true, false, d, n, T, R(1), x_, d, d_logits_, n, R(1), d_phi_, n);
}

template class SoftMoe<float>;
template class SoftMoe<double>;

}  // namespace moe::sparse
