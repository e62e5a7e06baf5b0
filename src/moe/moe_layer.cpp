// MoeLayer: the composition of router, dispatch, expert bank, combine and shared experts
// (see moe_layer.h).
#include "moe/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "core/parallel_for.h"
#include "core/profile.h"
#include "moe/dispatch.h"

namespace moe::sparse {

namespace {
// Parallel zero/add passes over [rows, d]: below 32k elements one thread is as fast.
constexpr int64_t kParallelMin = 32768;

template <class R>
void zero(R* p, int64_t n) {
    const int64_t chunk = 16384;
    const int64_t chunks = (n + chunk - 1) / chunk;
    parallel_for(chunks, n >= kParallelMin, [&](int64_t c) {
        std::fill(p + c * chunk, p + std::min(n, (c + 1) * chunk), R(0));
    });
}
}  // namespace

template <class R>
MoeLayer<R>::MoeLayer(const MoeConfig& cfg, int64_t max_tokens)
    : MoeBlock<R>(cfg, max_tokens), d_(cfg_.d_model), H_(cfg_.d_expert), shared_(cfg_, max_tokens) {
    MOE_REQUIRE(cfg_.router != "soft",
                "MoeLayer: router 'soft' routes no tokens; make_moe_block builds a "
                "SoftMoeLayer for it");
    router_ = make_router<R>(cfg_);
    experts_ = std::make_unique<ExpertBank<R>>(cfg_.expert, cfg_.n_experts, d_, H_);
}

template <class R>
MoeLayer<R>::~MoeLayer() = default;

template <class R>
void MoeLayer<R>::set_expert_parallel(comm::Comm* comm) {
    MOE_CHECK(!acts_.allocated(), "MoeLayer::set_expert_parallel after declare");
    if (!comm || comm->size() == 1) return;
    exchange_ = std::make_unique<ExpertExchange<R>>(*comm, cfg_.n_experts, d_);
    experts_ = std::make_unique<ExpertBank<R>>(cfg_.expert, exchange_->local_experts(), d_, H_);
    router_->set_batch_group(comm);
    group_ = comm;
}

template <class R>
int64_t MoeLayer<R>::local_experts() const {
    return exchange_ ? exchange_->local_experts() : cfg_.n_experts;
}

template <class R>
void MoeLayer<R>::declare(Arena& params, const std::string& prefix) {
    MOE_CHECK(!acts_.allocated(), "MoeLayer::declare called twice");
    prefix_ = prefix;
    const int64_t E = cfg_.n_experts, T = max_tokens_;
    constexpr DType dt = dtype_of<R>();
    const int64_t max_rows = router_->max_rows(T);
    MOE_CHECK(max_rows >= 1, "MoeLayer::declare: router ", router_->name(), " gives max_rows ",
              max_rows, " for ", T, " tokens");
    router_->declare(params, acts_, prefix, T);
    experts_->declare(params, prefix + "experts.");
    shared_.declare(params, prefix);

    const std::string p = prefix + "plan.";
    acts_.add(p + "offsets", {E + 1}, DType::i64);
    acts_.add(p + "row_token", {max_rows}, DType::i32);
    acts_.add(p + "row_choice", {max_rows}, DType::i32);
    acts_.add(p + "row_weight", {max_rows}, dt);
    acts_.add(p + "token_offsets", {T + 1}, DType::i64);
    acts_.add(p + "token_rows", {max_rows}, DType::i32);
    acts_.add(prefix + "xs", {max_rows, d_}, dt);
    acts_.add(prefix + "ys", {max_rows, d_}, dt);
    acts_.add(prefix + "d_ys", {max_rows, d_}, dt);
    acts_.add(prefix + "d_xs", {max_rows, d_}, dt);
    acts_.add(prefix + "d_row_weight", {max_rows}, dt);
    int64_t expert_rows = max_rows;
    if (exchange_) {
        expert_rows = exchange_->max_owner_rows(max_rows);
        const std::string o = prefix + "ep.";
        acts_.add(o + "xs", {expert_rows, d_}, dt);
        acts_.add(o + "ys_scratch", {expert_rows, d_}, dt);
        acts_.add(o + "d_ys", {expert_rows, d_}, dt);
        acts_.add(o + "d_xs", {expert_rows, d_}, dt);
        exchange_->declare_buffers(acts_, o, max_rows);
    }
    experts_->declare_buffers(acts_, prefix + "experts.", expert_rows);
    shared_.declare_buffers(acts_);
    acts_.allocate();
    plan_.max_rows = max_rows;
}

template <class R>
void MoeLayer<R>::bind(Arena& params, Arena& grads) {
    MOE_CHECK(acts_.allocated(), "MoeLayer::bind before declare");
    MOE_CHECK(params.allocated() && grads.allocated() && params.bytes() == grads.bytes(),
              "MoeLayer::bind: parameter and gradient arenas must be allocated with one layout");
    Arena& acts = acts_;  // not a dependent name: its ptr<R>() needs no "template"
    router_->bind(params, grads, acts_);
    experts_->bind(params, grads, acts_);
    const std::string p = prefix_ + "plan.";
    plan_.offsets = acts.get(p + "offsets").ptr<int64_t>();
    plan_.row_token = acts.get(p + "row_token").ptr<int32_t>();
    plan_.row_choice = acts.get(p + "row_choice").ptr<int32_t>();
    plan_.row_weight = acts.get(p + "row_weight").ptr<R>();
    plan_.token_offsets = acts.get(p + "token_offsets").ptr<int64_t>();
    plan_.token_rows = acts.get(p + "token_rows").ptr<int32_t>();
    xs_ = acts.get(prefix_ + "xs").ptr<R>();
    ys_ = acts.get(prefix_ + "ys").ptr<R>();
    d_ys_ = acts.get(prefix_ + "d_ys").ptr<R>();
    d_xs_ = acts.get(prefix_ + "d_xs").ptr<R>();
    d_row_weight_ = acts.get(prefix_ + "d_row_weight").ptr<R>();
    if (exchange_) {
        const std::string o = prefix_ + "ep.";
        oxs_ = acts.get(o + "xs").ptr<R>();
        oys_ = acts.get(o + "ys_scratch").ptr<R>();
        od_ys_ = acts.get(o + "d_ys").ptr<R>();
        od_xs_ = acts.get(o + "d_xs").ptr<R>();
        exchange_->bind(acts_);
    }
    shared_.bind(params, grads, acts_);
    bound_ = true;
}

template <class R>
void MoeLayer<R>::init_weights(Rng& rng, double std, double out_std) {
    MOE_CHECK(bound_, "MoeLayer::init_weights before bind");
    if (out_std < 0) out_std = std;
    Rng r_router = rng.fork(0), r_experts = rng.fork(1), r_shared = rng.fork(2);
    router_->init_weights(r_router);
    experts_->init_weights(r_experts, std, out_std, cfg_.n_experts, first_expert());
    shared_.init_weights(r_shared, std, out_std);
}

template <class R>
double MoeLayer<R>::forward(R* out, const R* x, int64_t T, const RouterInput<R>& extras) {
    // out: [T, d] written; x: [T, d]
    MOE_CHECK(bound_, "MoeLayer::forward before bind");
    MOE_CHECK(T >= 1 && T <= max_tokens_, "MoeLayer::forward: T=", T,
              " outside [1, max_tokens=", max_tokens_, "]");
    in_ = extras;
    in_.x = x;
    in_.T = T;
    {
        MOE_PROFILE_SCOPE("router_fwd");
        router_->forward(in_, plan_, losses_);
    }
    MOE_CHECK(plan_.T == T && plan_.E == cfg_.n_experts && plan_.rows() <= plan_.max_rows,
              "MoeLayer::forward: router ", router_->name(), " built a plan for T=", plan_.T,
              " E=", plan_.E, " rows=", plan_.rows(), " (expected T=", T, " E=", cfg_.n_experts,
              " rows <= ", plan_.max_rows, ")");
    {
        MOE_PROFILE_SCOPE("dispatch_fwd");
        dispatch_forward(xs_, x, plan_, d_);
    }
    if (exchange_) {
        // Expert parallelism: the rows go to their experts' ranks, run, and come back.
        {
            MOE_PROFILE_SCOPE("exchange_fwd");
            exchange_->exchange_counts(plan_.offsets);
            exchange_->to_owners(oxs_, xs_);
        }
        {
            MOE_PROFILE_SCOPE("experts_fwd");
            experts_->forward(oys_, oxs_, exchange_->owner_offsets());
        }
        MOE_PROFILE_SCOPE("exchange_fwd");
        exchange_->to_home(ys_, oys_);
    } else {
        MOE_PROFILE_SCOPE("experts_fwd");
        experts_->forward(ys_, xs_, plan_.offsets);
    }
    {
        MOE_PROFILE_SCOPE("combine_fwd");
        combine_forward(out, ys_, plan_, d_);
    }
    shared_.forward(out, x, T);
    {
        MOE_PROFILE_SCOPE("moe_stats");
        update_stats(stats_, plan_, router_->probs(), losses_, group_);
    }
    have_forward_ = true;
    return losses_.weighted_total;
}

template <class R>
void MoeLayer<R>::backward(const R* d_out, R* d_x) {
    // d_out: [T, d]; d_x: [T, d] accumulated
    MOE_CHECK(have_forward_, "MoeLayer::backward without a forward");
    const int64_t rows = plan_.rows();
    {
        MOE_PROFILE_SCOPE("combine_bwd");
        combine_backward(d_ys_, d_row_weight_, d_out, ys_, plan_, d_);
    }
    if (exchange_) {
        // The mirror of forward: output gradients to the experts' ranks, input gradients back.
        {
            MOE_PROFILE_SCOPE("exchange_bwd");
            exchange_->to_owners(od_ys_, d_ys_);
        }
        {
            MOE_PROFILE_SCOPE("experts_bwd");
            zero(od_xs_, exchange_->owner_rows() * d_);
            experts_->backward(od_xs_, od_ys_, oxs_, exchange_->owner_offsets());
        }
        MOE_PROFILE_SCOPE("exchange_bwd");
        exchange_->to_home(d_xs_, od_xs_);
    } else {
        MOE_PROFILE_SCOPE("experts_bwd");
        zero(d_xs_, rows * d_);
        experts_->backward(d_xs_, d_ys_, xs_, plan_.offsets);
    }
    {
        MOE_PROFILE_SCOPE("dispatch_bwd");
        dispatch_backward(d_x, d_xs_, plan_, d_);
    }
    {
        MOE_PROFILE_SCOPE("router_bwd");
        router_->backward(in_, plan_, d_row_weight_, d_x);
    }
    shared_.backward(d_out, d_x);
}

template <class R>
void MoeLayer<R>::after_step() {
    if (have_forward_) router_->after_step(plan_);
}

template class MoeLayer<float>;
template class MoeLayer<double>;

}  // namespace moe::sparse
