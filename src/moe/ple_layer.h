// PleLayer<R>: one extraction level of Progressive Layered Extraction (Tang et al. 2020,
// "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
// Personalized Recommendations"), i.e. Customized Gate Control (CGC).
//
// Es shared experts serve every task; each of the K tasks also has Et experts of its own.
// Task k's gate mixes its own experts and the shared ones:
//
//   g_k(x) = softmax(W_k x + b_k)               [T, Et + Es]  columns: task k's experts,
//                                                              then the shared ones
//   out_k[t] = sum_j g_k(x_t)_j expert_j(x_t)   [T, d]
//
// With shared_output (a level that feeds another level), a shared gate over every expert,
// columns in bank order (shared, then task 0's, task 1's, ...), gives the shared output
// the next level's shared experts read. The last level has no shared gate.
//
// A level above the first (per_task_inputs) reads K + 1 inputs, the outputs of the level
// below: task k's experts and gate read input k (task k's output there), the shared experts
// and the shared gate input K (the shared output there).
//
// Parameters, by module path under the prefix:
//   experts.w1 / w3 / w2    [Es + K*Et, ...]  one stacked bank: shared experts [0, Es),
//                                             task k's [Es + k*Et, Es + (k+1)*Et)
//   task.<k>.gate.w [Et + Es, d], task.<k>.gate.b [Et + Es]
//   shared.gate.w [Es + K*Et, d], shared.gate.b [Es + K*Et]  (with shared_output)
// The banks are slices of one ExpertBank so that every expert runs in one grouped GEMM
// over one dispatch (MultiGateMixture, which MultiGateMoe also uses): each token runs
// through every expert once, however many gates read it.
//
// Lifecycle as SoftMoe: construct; declare(params, acts, prefix); <arenas allocated>;
// bind(params, grads, acts); init_weights; then forward/backward pairs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/rng.h"
#include "moe/moe_config.h"
#include "moe/multi_gate_mixture.h"

namespace moe::sparse {

struct PleShape {
    int64_t n_tasks = 2;
    int64_t n_shared = 1;          // Es
    int64_t n_per_task = 1;        // Et
    bool shared_output = false;    // a shared gate and output for the next level
    bool per_task_inputs = false;  // K + 1 inputs (task 0..K-1, shared) instead of one
    int64_t top_k = 0;             // 0: dense gates; k: each token keeps its gates' top k
};

template <class R>
class PleLayer {
  public:
    // Uses cfg.d_model, d_expert and expert; the expert counts come from `shape`.
    PleLayer(const MoeConfig& cfg, const PleShape& shape, int64_t max_tokens);

    void declare(Arena& params, Arena& acts, const std::string& prefix);
    void bind(Arena& params, Arena& grads, Arena& acts) { mix_.bind(params, grads, acts); }
    // Gates ~ N(0, std) with zero bias; expert input projections N(0, std), down N(0, out_std).
    void init_weights(Rng& rng, double std = 0.02, double out_std = 0.02) {
        mix_.init_weights(rng, std, out_std);
    }

    // task_outs[k]: [T, d] written, k < n_tasks; shared_out: [T, d] written, required
    // exactly when shape.shared_output; x: [T, d].
    void forward(R* const* task_outs, R* shared_out, const R* x, int64_t T);
    // d_task_outs[k]: [T, d]; d_shared_out: [T, d] (with shared_output, else null);
    // d_x: [T, d] and every parameter gradient accumulated.
    void backward(const R* const* d_task_outs, const R* d_shared_out, R* d_x);
    // per_task_inputs: xs[i]: [T, d], i <= n_tasks (task inputs, then the shared one).
    void forward(R* const* task_outs, R* shared_out, const R* const* xs, int64_t T);
    // per_task_inputs: d_xs[i]: [T, d] accumulated, i <= n_tasks.
    void backward(const R* const* d_task_outs, const R* d_shared_out, R* const* d_xs);

    const PleShape& shape() const { return shape_; }
    // Bank index of task k's j-th own expert, and of shared expert s.
    int64_t task_expert(int64_t k, int64_t j) const {
        return shape_.n_shared + k * shape_.n_per_task + j;
    }
    int64_t shared_expert(int64_t s) const { return s; }
    // [T, Et + Es] task k's gate of the last forward; the shared gate is gate n_tasks.
    const R* gate(int64_t g) const { return mix_.gate_weights(g); }
    int64_t rows() const { return mix_.rows(); }
    ExpertBank<R>& experts() { return mix_.experts(); }

  private:
    PleShape shape_;
    MultiGateMixture<R> mix_;
    std::vector<R*> outs_;          // [K (+1)] forward's outputs, in gate order
    std::vector<const R*> d_outs_;  // [K (+1)]
};

extern template class PleLayer<float>;
extern template class PleLayer<double>;

}  // namespace moe::sparse
