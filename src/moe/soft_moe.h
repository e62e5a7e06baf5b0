// SoftMoe<R>: Soft Mixture-of-Experts (Puigcerver et al. 2023, "From Sparse to Soft
// Mixtures of Experts"). No token is routed: every slot is a softmax mixture of tokens and
// every output a softmax mixture of slots, so there is no discrete choice, no drop and no
// imbalance, and the whole layer is differentiable. It does not fit a RoutingPlan (a slot
// is not a token), so it is a layer of its own: SoftMoeLayer (src/moe/soft_moe_layer.h)
// wraps it, with the shared experts, as the MoeBlock for cfg.router == "soft".
//
// The T tokens of a call are G = T / seq_len sequences (groups) of L = seq_len tokens;
// seq_len = 0 means unknown, and then all T tokens are one group. With n = E * S slots
// (S = cfg.slots_per_expert), for each group X [L, d]:
//
//   logits = X phi                 [L, n]   phi: prefix + "router.phi" [d, n]
//   D = softmax over tokens        [L, n]   (each column sums to 1: dispatch weights)
//   C = softmax over slots         [L, n]   (each row sums to 1: combine weights)
//   slots = D^T X                  [n, d]   slot j = e * S + s belongs to expert e
//   Y[j] = expert_e(slots[j])      [n, d]   (the ExpertBank, all groups' slots of an
//                                            expert in one block)
//   out = C Y                      [L, d]
//
// Each slot mixes the tokens of its whole sequence, later ones included, so a causal
// model is refused. The paper's L2 normalisation of X and phi (for very wide models) is
// not applied: phi starts small (N(0, std)), which gives near-uniform mixtures.
//
// Memory: the expert rows are G * n; buffers are sized at declare for the largest G,
// ceil(max_tokens / seq_len) (1 when seq_len = 0). Lifecycle as any MoeBlock: construct;
// declare(params, acts, prefix); <arenas allocated>; bind(params, grads, acts);
// init_weights; then forward/backward pairs, x unchanged in between (it is read again).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/arena.h"
#include "core/rng.h"
#include "moe/expert_bank.h"
#include "moe/moe_config.h"

namespace moe::sparse {

template <class R>
class SoftMoe {
  public:
    // Refuses cfg.causal. seq_len: tokens per sequence (T of every call is a multiple of
    // it), or 0: each call's T tokens form one group.
    SoftMoe(const MoeConfig& cfg, int64_t max_tokens, int64_t seq_len = 0);

    // Declares prefix + "router.phi" [d, E*S] and the experts (prefix + "experts.w1", ...)
    // into params, and the saved buffers and scratch into acts (names under prefix + "soft."
    // and prefix + "experts.").
    void declare(Arena& params, Arena& acts, const std::string& prefix);
    void bind(Arena& params, Arena& grads, Arena& acts);
    // phi ~ N(0, std); expert input projections ~ N(0, std), down projections N(0, out_std).
    void init_weights(Rng& rng, double std = 0.02, double out_std = 0.02);

    // out: [T, d] written; x: [T, d]. T <= max_tokens, a multiple of seq_len when set.
    void forward(R* out, const R* x, int64_t T);
    // d_out: [T, d]; d_x: [T, d] and every parameter gradient accumulated.
    void backward(const R* d_out, R* d_x);

    ExpertBank<R>& experts() { return *experts_; }
    int64_t seq_len() const { return seq_len_; }
    int64_t slots() const { return n_; }  // E * S per group
    // [T, E*S] of the last forward: dispatch (softmax over tokens of each group) and
    // combine (softmax over slots) weights.
    const R* dispatch_weights() const { return disp_; }
    const R* combine_weights() const { return comb_; }

  private:
    // Rows of the expert blocks: expert e's slots of group g are rows
    // e * G * S + g * S + [0, S), so each expert's rows are contiguous.
    int64_t slot_row(int64_t e, int64_t g, int64_t G) const { return (e * G + g) * S_; }

    MoeConfig cfg_;
    int64_t max_tokens_, seq_len_, E_, S_, n_, d_, max_groups_;
    std::string prefix_;
    std::unique_ptr<ExpertBank<R>> experts_;

    int phi_id_ = -1;
    R* phi_ = nullptr;    // [d, n]
    R* d_phi_ = nullptr;  // [d, n]

    // Saved by forward for backward.
    const R* x_ = nullptr;  // the last forward's input [T, d]
    int64_t T_ = 0, G_ = 0, L_ = 0;
    R* disp_ = nullptr;           // [max_T, n] D
    R* comb_ = nullptr;           // [max_T, n] C
    R* xs_ = nullptr;             // [max_G * n, d] slot inputs
    R* ys_ = nullptr;             // [max_G * n, d] expert outputs
    int64_t* offsets_ = nullptr;  // [E + 1]
    // Backward scratch.
    R* d_logits_ = nullptr;  // [max_T, n]
    R* d_disp_ = nullptr;    // [max_T, n]
    R* d_comb_ = nullptr;    // [max_T, n]
    R* d_xs_ = nullptr;      // [max_G * n, d]
    R* d_ys_ = nullptr;      // [max_G * n, d]
    double* col_ = nullptr;  // [n] per-column max, sum or dot of one group
};

extern template class SoftMoe<float>;
extern template class SoftMoe<double>;

}  // namespace moe::sparse
