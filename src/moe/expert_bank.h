// ExpertBank<R>: E experts with stacked weights, run as grouped GEMMs over the plan's
// expert-major row blocks.
//
// Weights (declared into the model's parameter arena under a prefix, e.g.
// "layers.3.moe.experts."):
//   w1 [E, H, d], w3 [E, H, d] (SwiGLU gate and up projections), w2 [E, d, H] (down).
//   GELU and ReLU experts have w1 and w2 only, and no biases (as in T5/Switch).
// Expert e is the slice [e] of each, so it is one contiguous block: growth appends, and a
// freeze mask is a range.
//
// Forward runs, for each expert with rows, one nn::swiglu_mlp_forward (or gelu, relu) on
// block xs[offsets[e], offsets[e+1]): one GEMM per projection. Empty experts are skipped,
// and their gradients are left untouched. The saved buffers (h1, h3, act: [max_rows, H])
// and the backward scratch ([3, max_rows, H]) live in the layer's activation arena; each
// expert uses the rows of its own block, so experts can run in any order or in parallel
// without sharing memory.
//
// Threads: either oneDNN threads each GEMM (experts in sequence), or the experts are
// spread over the threads with each GEMM single-threaded. Which is faster depends on the
// block sizes; Parallel::automatic spreads the experts when a largest-first assignment
// balances the threads' rows within 5% (measured on this machine: see expert_bank.cpp).
// The numbers do not depend on scheduling (every expert's work is the same sequence of
// calls on its own memory), only on the plan and the thread count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/rng.h"
#include "moe/moe_config.h"

namespace moe::sparse {

template <class R>
class ExpertBank {
  public:
    enum class Parallel { automatic, over_gemm, over_experts };

    ExpertBank(ExpertKind kind, int64_t E, int64_t d, int64_t H);

    // Declares prefix + "w1", "w3" (SwiGLU), "w2" into params (dtype_of<R>()).
    void declare(Arena& params, const std::string& prefix);
    // Declares saved buffers and backward scratch for max_rows rows into acts, named under
    // `prefix` (which must differ from any other user of acts).
    void declare_buffers(Arena& acts, const std::string& prefix, int64_t max_rows);
    void bind(Arena& params, Arena& grads, Arena& acts);
    // w1, w3 ~ N(0, std), w2 ~ N(0, out_std). Expert parallelism: this bank holds experts
    // [first, first + E) of a bank of global_E (0: E); it gets exactly their weights.
    void init_weights(Rng& rng, double std, double out_std, int64_t global_E = 0,
                      int64_t first = 0);

    // ys[rows, d] = expert_e(xs[rows, d]) block by block; offsets: [E + 1] (plan.offsets).
    void forward(R* ys, const R* xs, const int64_t* offsets);
    // Accumulates d_xs [rows, d] (nullable) and the weight gradients of non-empty experts,
    // from d_ys [rows, d] and the buffers saved by the last forward on the same blocks.
    void backward(R* d_xs, const R* d_ys, const R* xs, const int64_t* offsets);

    void set_parallel(Parallel p) { parallel_ = p; }
    // The mode forward/backward use for these offsets (automatic resolved).
    Parallel resolve(const int64_t* offsets) const;

    // Bytes of saved buffers per row (kept from forward to backward).
    int64_t saved_bytes_per_row() const;

    ExpertKind kind() const { return kind_; }
    int64_t n_experts() const { return E_; }
    int64_t hidden() const { return H_; }
    R* w1() const { return w1_; }
    R* w3() const { return w3_; }
    R* w2() const { return w2_; }

  private:
    void forward_expert(int64_t e, R* ys, const R* xs, const int64_t* offsets);
    void backward_expert(int64_t e, R* d_xs, const R* d_ys, const R* xs, const int64_t* offsets);
    template <class Body>
    void for_each_expert(const int64_t* offsets, const Body& body);

    ExpertKind kind_;
    int64_t E_, d_, H_;
    Parallel parallel_ = Parallel::automatic;
    std::string prefix_, buf_prefix_;
    int64_t max_rows_ = 0;
    int w1_id_ = -1, w3_id_ = -1, w2_id_ = -1;
    R *w1_ = nullptr, *w3_ = nullptr, *w2_ = nullptr;        // [E, H, d], [E, H, d], [E, d, H]
    R *d_w1_ = nullptr, *d_w3_ = nullptr, *d_w2_ = nullptr;  // same shapes
    R *h1_ = nullptr, *h3_ = nullptr, *act_ = nullptr;  // [max_rows, H] saved (GELU, ReLU: h1 = h)
    R* scratch_ = nullptr;                              // [3 or 2, max_rows, H]
    std::vector<int64_t> order_;                        // [E] experts by block size
};

extern template class ExpertBank<float>;
extern template class ExpertBank<double>;

}  // namespace moe::sparse
