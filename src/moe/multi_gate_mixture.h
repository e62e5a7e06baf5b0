// MultiGateMixture<R>: several softmax gates reading one expert bank. The engine under the
// multi-task layers (MultiGateMoe: MMoE; PleLayer: PLE/CGC), which differ only in which
// experts each gate may mix.
//
// Gate g covers the experts cols[g] = (e_0, ..., e_{n_g - 1}) of a bank of E experts:
//
//   logits_g = x W_g^T + b_g                     [T, n_g]   W_g: <gate prefix>"w" [n_g, d]
//   p_g = softmax over the kept columns          [T, n_g]   (0 elsewhere)
//   out_g[t] = sum_j p_g[t, j] expert_{e_j}(x[t])           [T, d]
//
// Kept columns: all of them (dense gating, top_k = 0), or each token's top_k logits (ties
// to the lower column). A softmax over the kept logits is the full softmax renormalised
// over the kept experts, so one formula, and one backward, serves both.
//
// Every expert runs at most once per token: the union over the gates of each token's
// kept experts is one RoutingPlan (choice c = t * E + e), dispatched once and run by the
// ExpertBank as one grouped GEMM. Each gate then combines the same expert outputs with its
// own row weights (the plan's row_weight is pointed at that gate's array for the call),
// and in backward the gates' d_ys add up before the one bank backward. No capacity: a
// multi-task model wants every task's output for every token.
//
// Several inputs (multi-level PLE, where task k's experts and gate read task k's output of
// the level below and the shared ones the shared output): expert_input[e] and
// gate_input[g] name which of n_inputs inputs expert e and gate g read. The plan is the
// same; a row's source in dispatch is simply the input of its expert, so every expert
// still runs in the one grouped GEMM. Without them there is one input, x.
//
// Memory: rows are at most T * E; everything is sized at declare for max_tokens.
// Lifecycle as SoftMoe: construct; declare(params, acts, ...); <arenas allocated>;
// bind(params, grads, acts); init_weights; then forward/backward pairs, x unchanged in
// between (backward reads it again).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/rng.h"
#include "moe/expert_bank.h"
#include "moe/moe_config.h"
#include "moe/routing_plan.h"

namespace moe::sparse {

template <class R>
class MultiGateMixture {
  public:
    // cols[g]: the bank experts gate g mixes (distinct, each in [0, E)). top_k: 0 keeps
    // every column, otherwise each token keeps min(top_k, n_g) of them. `op` names the
    // owning layer in error messages. expert_input: [E] and gate_input: [G] the input each
    // expert and gate reads (both empty: one input for all; else each >= 0, and n_inputs()
    // is one more than the largest).
    MultiGateMixture(const std::string& op, ExpertKind kind, int64_t E, int64_t d, int64_t H,
                     std::vector<std::vector<int64_t>> cols, int64_t top_k, int64_t max_tokens,
                     std::vector<int64_t> expert_input = {}, std::vector<int64_t> gate_input = {});

    // Declares gate g's gate_prefixes[g] + "w" [n_g, d] and + "b" [n_g], the experts
    // (expert_prefix + "w1", ...), and the buffers under buf_prefix (into acts).
    void declare(Arena& params, Arena& acts, const std::vector<std::string>& gate_prefixes,
                 const std::string& expert_prefix, const std::string& buf_prefix);
    void bind(Arena& params, Arena& grads, Arena& acts);
    // Gate weights ~ N(0, std), biases 0; experts as ExpertBank::init_weights.
    void init_weights(Rng& rng, double std, double out_std);

    // outs[g]: [T, d] written for every gate; x: [T, d], 1 <= T <= max_tokens. One input.
    void forward(R* const* outs, const R* x, int64_t T);
    // d_outs[g]: [T, d]; d_x: [T, d] and every parameter gradient accumulated. One input.
    void backward(const R* const* d_outs, R* d_x);
    // xs[i]: [T, d] input i < n_inputs(); outs as above.
    void forward(R* const* outs, const R* const* xs, int64_t T);
    // d_xs[i]: [T, d] accumulated for every input (may alias each other only if the inputs
    // do); d_outs as above.
    void backward(const R* const* d_outs, R* const* d_xs);

    int64_t n_inputs() const { return n_inputs_; }
    int64_t n_gates() const { return int64_t(cols_.size()); }
    int64_t gate_width(int64_t g) const { return int64_t(cols_[size_t(g)].size()); }
    // [T, n_g] of the last forward: gate g's mixing weights (0 where not kept).
    const R* gate_weights(int64_t g) const { return probs_ + gate_off_[size_t(g)]; }
    // Rows the bank ran in the last forward: the union of the gates' kept experts.
    int64_t rows() const { return plan_.rows(); }
    // The union plan of the last forward; its row_weight is gate 0's (each gate's weights
    // are swapped in for its own combine).
    const RoutingPlan<R>& plan() const { return plan_; }
    ExpertBank<R>& experts() { return *experts_; }

  private:
    void route(int64_t T);  // logits, kept columns, gate weights, union plan

    std::string op_;
    int64_t E_, d_, top_k_, max_tokens_;
    std::vector<std::vector<int64_t>> cols_;    // [G][n_g] expert of each gate column
    std::vector<std::vector<int32_t>> col_of_;  // [G][E] gate column of each expert, or -1
    std::vector<int64_t> gate_off_;             // [G] offset of gate g in the [T, n] buffers
    std::vector<int64_t> expert_input_;         // [E] input expert e reads
    std::vector<int64_t> gate_input_;           // [G] input gate g reads
    int64_t n_inputs_ = 1;
    int64_t sum_cols_ = 0, max_cols_ = 0;
    std::unique_ptr<ExpertBank<R>> experts_;
    std::string buf_prefix_;

    std::vector<int> w_id_, b_id_;       // [G]
    std::vector<R*> w_, b_, d_w_, d_b_;  // [G] -> [n_g, d], [n_g]
    RoutingPlan<R> plan_;                // the union, row_weight re-pointed
    R* logits_ = nullptr;                // [sum_g max_T * n_g]
    R* probs_ = nullptr;                 // [sum_g max_T * n_g] p_g
    int32_t* union_expert_ = nullptr;    // [max_T, E] e or -1
    R* union_weight_ = nullptr;        // [max_T, E] the plan's weights: left 0 (the arena zeroes),
                                       // each gate's are filled into row_weights_
    int64_t* plan_scratch_ = nullptr;  // [E + max_T * E]
    R* row_weights_ = nullptr;         // [G, max_T * E] gate g of row r
    R* xs_ = nullptr;                  // [max_T * E, d]
    R* ys_ = nullptr;                  // [max_T * E, d]
    R* d_xs_ = nullptr;                // [max_T * E, d]
    R* d_ys_ = nullptr;                // [max_T * E, d]
    R* d_ys_gate_ = nullptr;           // [max_T * E, d] one gate's part
    R* d_row_weight_ = nullptr;        // [max_T * E]
    R* d_probs_ = nullptr;             // [max_T, max n_g]
    R* d_logits_ = nullptr;            // [max_T, max n_g]
    std::vector<const R*> x_;          // [n_inputs] the last forward's inputs, each [T, d]
    int64_t T_ = 0;
};

extern template class MultiGateMixture<float>;
extern template class MultiGateMixture<double>;

}  // namespace moe::sparse
