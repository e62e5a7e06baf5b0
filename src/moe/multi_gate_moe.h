// MultiGateMoe<R>: Multi-gate Mixture-of-Experts (MMoE; Ma et al. 2018, "Modeling Task
// Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts"). K tasks share
// one bank of E experts; task k has its own gate over all of them:
//
//   g_k(x) = softmax(W_k x + b_k)              [T, E]   W_k: prefix + "gate.<k>.w" [E, d]
//                                                        b_k: prefix + "gate.<k>.b" [E]
//   out_k[t] = sum_e g_k(x_t)_e expert_e(x_t)  [T, d]   experts: prefix + "experts.w1", ...
//
// Dense gating, as in the paper, runs every expert on every token. With top_k < E each
// task keeps its top_k experts per token (weights renormalised over them), and an expert
// runs on a token only when some task kept it, once however many tasks did (see
// MultiGateMixture, which does the work). The task outputs feed per-task towers; there is
// no residual and no balancing loss here.
//
// Lifecycle as SoftMoe: construct; declare(params, acts, prefix); <arenas allocated>;
// bind(params, grads, acts); init_weights; then forward/backward pairs.
#pragma once

#include <cstdint>
#include <string>

#include "core/arena.h"
#include "core/rng.h"
#include "moe/moe_config.h"
#include "moe/multi_gate_mixture.h"

namespace moe::sparse {

template <class R>
class MultiGateMoe {
  public:
    // Uses cfg.n_experts, d_model, d_expert and expert (the router keys do not apply).
    // top_k: 0 = dense gating, else 1 <= top_k <= n_experts.
    MultiGateMoe(const MoeConfig& cfg, int64_t n_tasks, int64_t max_tokens, int64_t top_k = 0);

    // Declares the gates and experts into params and the buffers (prefix + "mmoe.",
    // prefix + "experts.") into acts.
    void declare(Arena& params, Arena& acts, const std::string& prefix);
    void bind(Arena& params, Arena& grads, Arena& acts) { mix_.bind(params, grads, acts); }
    // Gates ~ N(0, std) with zero bias; expert input projections N(0, std), down N(0, out_std).
    void init_weights(Rng& rng, double std = 0.02, double out_std = 0.02) {
        mix_.init_weights(rng, std, out_std);
    }

    // outs[k]: [T, d] written, k < n_tasks; x: [T, d].
    void forward(R* const* outs, const R* x, int64_t T) { mix_.forward(outs, x, T); }
    // d_outs[k]: [T, d]; d_x: [T, d] and every parameter gradient accumulated.
    void backward(const R* const* d_outs, R* d_x) { mix_.backward(d_outs, d_x); }

    int64_t n_tasks() const { return n_tasks_; }
    // [T, E] task k's gate of the last forward (0 for experts it did not keep).
    const R* gate(int64_t k) const { return mix_.gate_weights(k); }
    // Expert rows of the last forward: tokens times the experts some task kept.
    int64_t rows() const { return mix_.rows(); }
    ExpertBank<R>& experts() { return mix_.experts(); }

  private:
    int64_t n_tasks_;
    MultiGateMixture<R> mix_;
};

extern template class MultiGateMoe<float>;
extern template class MultiGateMoe<double>;

}  // namespace moe::sparse
