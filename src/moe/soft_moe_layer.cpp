// SoftMoeLayer: SoftMoe plus shared experts behind the MoeBlock interface (see
// soft_moe_layer.h).
#include "moe/soft_moe_layer.h"

#include <algorithm>

#include "core/check.h"
#include "core/profile.h"

namespace moe::sparse {

template <class R>
SoftMoeLayer<R>::SoftMoeLayer(const MoeConfig& cfg, int64_t max_tokens, int64_t seq_len)
    : MoeBlock<R>(cfg, max_tokens),
      soft_(this->cfg_, max_tokens, seq_len),
      shared_(this->cfg_, max_tokens) {}

template <class R>
void SoftMoeLayer<R>::set_expert_parallel(comm::Comm* comm) {
    MOE_CHECK(!this->acts_.allocated(), "SoftMoeLayer::set_expert_parallel after declare");
    if (!comm || comm->size() == 1) return;
    MOE_REQUIRE(false,
                "expert parallelism does not support router 'soft' (Soft MoE mixes "
                "every token into every expert's slots)");
}

template <class R>
void SoftMoeLayer<R>::declare(Arena& params, const std::string& prefix) {
    MOE_CHECK(!this->acts_.allocated(), "SoftMoeLayer::declare called twice");
    soft_.declare(params, this->acts_, prefix);
    shared_.declare(params, prefix);
    shared_.declare_buffers(this->acts_);
    this->acts_.allocate();
}

template <class R>
void SoftMoeLayer<R>::bind(Arena& params, Arena& grads) {
    MOE_CHECK(this->acts_.allocated(), "SoftMoeLayer::bind before declare");
    MOE_CHECK(params.allocated() && grads.allocated() && params.bytes() == grads.bytes(),
              "SoftMoeLayer::bind: parameter and gradient arenas must be allocated with one "
              "layout");
    soft_.bind(params, grads, this->acts_);
    shared_.bind(params, grads, this->acts_);
    bound_ = true;
}

template <class R>
void SoftMoeLayer<R>::init_weights(Rng& rng, double std, double out_std) {
    MOE_CHECK(bound_, "SoftMoeLayer::init_weights before bind");
    if (out_std < 0) out_std = std;
    Rng r_soft = rng.fork(0), r_shared = rng.fork(2);
    soft_.init_weights(r_soft, std, out_std);
    shared_.init_weights(r_shared, std, out_std);
}

template <class R>
double SoftMoeLayer<R>::forward(R* out, const R* x, int64_t T, const RouterInput<R>&) {
    // out: [T, d] written; x: [T, d]
    MOE_CHECK(bound_, "SoftMoeLayer::forward before bind");
    MOE_CHECK(T >= 1 && T <= this->max_tokens_, "SoftMoeLayer::forward: T=", T,
              " outside [1, max_tokens=", this->max_tokens_, "]");
    {
        MOE_PROFILE_SCOPE("soft_moe_fwd");
        soft_.forward(out, x, T);
    }
    shared_.forward(out, x, T);
    this->losses_ = RouterLosses{};
    const int64_t groups = soft_.seq_len() > 0 ? T / soft_.seq_len() : 1;
    const int64_t slots = groups * this->cfg_.soft.slots_per_expert;  // rows of each expert
    MoeStats& st = this->stats_;
    st.tokens = T;
    st.rows = slots * this->cfg_.n_experts;
    std::fill(st.tokens_per_expert.begin(), st.tokens_per_expert.end(), slots);
    st.max_load = st.mean_load = double(slots);
    st.load_imbalance = 1;
    st.dropped_fraction = 0;
    st.router_entropy = -1;
    st.losses = this->losses_;
    have_forward_ = true;
    return 0;
}

template <class R>
void SoftMoeLayer<R>::backward(const R* d_out, R* d_x) {
    // d_out: [T, d]; d_x: [T, d] accumulated
    MOE_CHECK(have_forward_, "SoftMoeLayer::backward without a forward");
    {
        MOE_PROFILE_SCOPE("soft_moe_bwd");
        soft_.backward(d_out, d_x);
    }
    shared_.backward(d_out, d_x);
}

template class SoftMoeLayer<float>;
template class SoftMoeLayer<double>;

}  // namespace moe::sparse
