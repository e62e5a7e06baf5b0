// SharedExperts<R>: the always-on experts of an MoE layer (DeepSeek-MoE), added on top of
// whatever the routed or soft path wrote:
//
//   out[t] += g_t * sum_s shared_s(x[t])        g_t = sigmoid(x[t] . gate), or 1 ungated
//
// Each shared expert is a SwiGLU MLP of width Hs (cfg.d_shared, or cfg.d_expert when 0).
// One part, used by every MoE block (MoeLayer, SoftMoeLayer), so the two cannot drift.
//
// Parameters (under the block's prefix, e.g. "layers.3.moe."): shared.w1 [S, Hs, d],
// shared.w3 [S, Hs, d], shared.w2 [S, d, Hs], and with cfg.shared_gate shared.gate [d].
// Buffers (the block's activation arena, under prefix + "shared."): the per-expert h1, h3,
// act [S, max_T, Hs] and the gate values [max_T] are saved for backward, the sum of the
// experts too when gated (the gate's gradient needs it); the rest is scratch.
//
// Lifecycle, driven by the block: declare(params, prefix) where the block declares its
// parameters; declare_buffers(acts) where it declares its activations (the block keeps
// its order of both, which fixes checkpoint layout); bind; init_weights; then
// forward/backward pairs with x unchanged in between (backward reads it again).
// With cfg.n_shared == 0 every call does nothing.
#pragma once

#include <cstdint>
#include <string>

#include "core/arena.h"
#include "core/rng.h"
#include "moe/moe_config.h"

namespace moe::sparse {

template <class R>
class SharedExperts {
  public:
    SharedExperts(const MoeConfig& cfg, int64_t max_tokens);

    bool empty() const { return S_ == 0; }
    void declare(Arena& params, const std::string& prefix);
    void declare_buffers(Arena& acts);
    void bind(Arena& params, Arena& grads, Arena& acts);
    // w1, w3 ~ N(0, std), w2 ~ N(0, out_std), gate 0 (the gate starts at 1/2).
    void init_weights(Rng& rng, double std, double out_std);

    // out: [T, d] accumulated; x: [T, d], kept by pointer for backward.
    void forward(R* out, const R* x, int64_t T);
    // d_out: [T, d]; d_x: [T, d] and every parameter gradient accumulated.
    void backward(const R* d_out, R* d_x);

  private:
    int64_t max_tokens_, d_, S_, Hs_;
    bool gated_;
    std::string prefix_;
    const R* x_ = nullptr;  // the last forward's input [T, d]
    int64_t T_ = 0;

    int w1_id_ = -1, w3_id_ = -1, w2_id_ = -1, gate_id_ = -1;
    R *w1_ = nullptr, *w3_ = nullptr, *w2_ = nullptr, *gate_ = nullptr;
    R *d_w1_ = nullptr, *d_w3_ = nullptr, *d_w2_ = nullptr, *d_gate_ = nullptr;
    R *h1_ = nullptr, *h3_ = nullptr, *act_ = nullptr;  // [S, max_T, Hs] saved
    R* sum_ = nullptr;      // [max_T, d] sum of the shared experts (saved when gated)
    R* tmp_ = nullptr;      // [max_T, d] scratch: one shared expert's output (S > 1)
    R* g_ = nullptr;        // [max_T] gate values (saved)
    R* d_sum_ = nullptr;    // [max_T, d]
    R* scratch_ = nullptr;  // [3, max_T, Hs]
};

extern template class SharedExperts<float>;
extern template class SharedExperts<double>;

}  // namespace moe::sparse
