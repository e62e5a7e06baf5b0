// SoftMoeLayer<R>: the MoeBlock for cfg.router == "soft": SoftMoe (src/moe/soft_moe.h)
// mixes each sequence's tokens into every expert's slots and the slots back into the
// tokens, and the shared experts (SharedExperts) add on top:
//
//   out = SoftMoe(x) + g * sum_s shared_s(x)
//
// No token is routed, so there is no RoutingPlan (routing_plan() is null), no Router and
// no router loss (forward returns 0). The statistics show every expert with
// groups * slots_per_expert rows, perfectly balanced, nothing dropped.
//
// Parameters under the prefix: router.phi [d, E*S] and experts.w1/w3/w2 (SoftMoe's), and
// the shared experts' shared.w1, shared.w3, shared.w2, shared.gate. Refuses cfg.causal
// (every slot sees later tokens) and expert parallelism (every expert sees every token).
#pragma once

#include <cstdint>
#include <string>

#include "moe/moe_block.h"
#include "moe/shared_experts.h"
#include "moe/soft_moe.h"

namespace moe::sparse {

template <class R>
class SoftMoeLayer final : public MoeBlock<R> {
  public:
    // seq_len: tokens per sequence (each call's T a multiple of it), or 0: each call's T
    // tokens are one group.
    SoftMoeLayer(const MoeConfig& cfg, int64_t max_tokens, int64_t seq_len = 0);

    void set_expert_parallel(comm::Comm* comm) override;
    int64_t first_expert() const override { return 0; }
    // Declares SoftMoe's parameters, then the shared experts'.
    void declare(Arena& params, const std::string& prefix) override;
    void bind(Arena& params, Arena& grads) override;
    // phi ~ N(0, std) and SoftMoe's experts from rng.fork(0), the shared experts from
    // rng.fork(2): the forks MoeLayer gives its router and its shared experts.
    void init_weights(Rng& rng, double std = 0.02, double out_std = -1) override;

    double forward(R* out, const R* x, int64_t T, const RouterInput<R>& extras = {}) override;
    void backward(const R* d_out, R* d_x) override;
    void after_step() override {}

    const RoutingPlan<R>* routing_plan() const override { return nullptr; }
    ExpertBank<R>& experts() override { return soft_.experts(); }
    SoftMoe<R>& soft() { return soft_; }

  private:
    SoftMoe<R> soft_;
    SharedExperts<R> shared_;
    bool bound_ = false, have_forward_ = false;
};

extern template class SoftMoeLayer<float>;
extern template class SoftMoeLayer<double>;

}  // namespace moe::sparse
