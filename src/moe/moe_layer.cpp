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
#include "moe/soft_moe.h"
#include "nn/mlp.h"

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

// Buffers used only inside one call: backward gradients (d_*) and scratch. The rest of the
// activation arena is what forward keeps for backward.
bool is_transient(const std::string& name) {
    const size_t dot = name.rfind('.');
    const std::string last = dot == std::string::npos ? name : name.substr(dot + 1);
    return last.rfind("d_", 0) == 0 || last.find("scratch") != std::string::npos;
}
}  // namespace

template <class R>
MoeLayer<R>::MoeLayer(const MoeConfig& cfg, int64_t max_tokens, int64_t seq_len)
    : cfg_(cfg), max_tokens_(max_tokens) {
    cfg_.validate();
    MOE_CHECK(max_tokens >= 1, "MoeLayer: max_tokens must be >= 1, got ", max_tokens);
    d_ = cfg_.d_model;
    H_ = cfg_.d_expert;
    S_ = cfg_.n_shared;
    Hs_ = cfg_.d_shared > 0 ? cfg_.d_shared : cfg_.d_expert;
    // ---- Soft MoE branch -------------------------------------------------------------
    // "soft" is not a Router: SoftMoe<R> (src/moe/soft_moe.h) replaces the whole routed
    // path (router, plan, dispatch, experts, combine); shared experts still add on top.
    // seq_len (0: each call's T tokens are one group) goes to SoftMoe, which also refuses
    // cfg.causal. router() is not available then; experts() is SoftMoe's bank.
    if (cfg_.router == "soft") {
        soft_ = std::make_shared<SoftMoe<R>>(cfg_, max_tokens_, seq_len);
        stats_.tokens_per_expert.assign(size_t(cfg_.n_experts), 0);
        return;
    }
    // -----------------------------------------------------------------------------------
    router_ = make_router<R>(cfg_);
    experts_ = std::make_unique<ExpertBank<R>>(cfg_.expert, cfg_.n_experts, d_, H_);
    stats_.tokens_per_expert.assign(size_t(cfg_.n_experts), 0);
}

template <class R>
MoeLayer<R>::~MoeLayer() = default;

template <class R>
void MoeLayer<R>::set_expert_parallel(comm::Comm* comm) {
    MOE_CHECK(!acts_.allocated(), "MoeLayer::set_expert_parallel after declare");
    if (!comm || comm->size() == 1) return;
    MOE_REQUIRE(!soft_,
                "expert parallelism does not support router 'soft' (Soft MoE mixes "
                "every token into every expert's slots)");
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
    // Soft MoE branch: phi, its experts and buffers; no plan (max_rows 0).
    const int64_t max_rows = soft_ ? 0 : router_->max_rows(T);
    if (soft_) {
        soft_->declare(params, acts_, prefix);
    } else {
        MOE_CHECK(max_rows >= 1, "MoeLayer::declare: router ", router_->name(), " gives max_rows ",
                  max_rows, " for ", T, " tokens");
        router_->declare(params, acts_, prefix, T);
        experts_->declare(params, prefix + "experts.");
    }
    declare_shared(params);

    const std::string p = prefix + "plan.";
    if (!soft_) {
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
    }
    if (S_ > 0) {
        const std::string s = prefix + "shared.";
        acts_.add(s + "h1", {S_, T, Hs_}, dt);
        acts_.add(s + "h3", {S_, T, Hs_}, dt);
        acts_.add(s + "act", {S_, T, Hs_}, dt);
        // The sum of the shared experts is needed by backward only for the gate's gradient.
        acts_.add(s + (cfg_.shared_gate ? "out" : "out_scratch"), {T, d_}, dt);
        acts_.add(s + "tmp_scratch", {S_ > 1 ? T : 1, d_}, dt);
        acts_.add(s + "gate_values", {T}, dt);
        acts_.add(s + "d_out", {T, d_}, dt);
        acts_.add(s + "scratch", {3, T, Hs_}, dt);
    }
    acts_.allocate();
    plan_.max_rows = max_rows;
}

template <class R>
void MoeLayer<R>::declare_shared(Arena& params) {
    if (S_ == 0) return;
    constexpr DType dt = dtype_of<R>();
    const std::string s = prefix_ + "shared.";
    sw1_id_ = params.add(s + "w1", {S_, Hs_, d_}, dt);
    sw3_id_ = params.add(s + "w3", {S_, Hs_, d_}, dt);
    sw2_id_ = params.add(s + "w2", {S_, d_, Hs_}, dt);
    if (cfg_.shared_gate) sgate_id_ = params.add(s + "gate", {d_}, dt);
}

template <class R>
void MoeLayer<R>::bind(Arena& params, Arena& grads) {
    MOE_CHECK(acts_.allocated(), "MoeLayer::bind before declare");
    MOE_CHECK(params.allocated() && grads.allocated() && params.bytes() == grads.bytes(),
              "MoeLayer::bind: parameter and gradient arenas must be allocated with one layout");
    if (soft_) soft_->bind(params, grads, acts_);  // Soft MoE branch
    const std::string p = prefix_ + "plan.";
    if (!soft_) {
        router_->bind(params, grads, acts_);
        experts_->bind(params, grads, acts_);
        plan_.offsets = acts_.get(p + "offsets").ptr<int64_t>();
        plan_.row_token = acts_.get(p + "row_token").ptr<int32_t>();
        plan_.row_choice = acts_.get(p + "row_choice").ptr<int32_t>();
        plan_.row_weight = acts_.get(p + "row_weight").ptr<R>();
        plan_.token_offsets = acts_.get(p + "token_offsets").ptr<int64_t>();
        plan_.token_rows = acts_.get(p + "token_rows").ptr<int32_t>();
        xs_ = acts_.get(prefix_ + "xs").ptr<R>();
        ys_ = acts_.get(prefix_ + "ys").ptr<R>();
        d_ys_ = acts_.get(prefix_ + "d_ys").ptr<R>();
        d_xs_ = acts_.get(prefix_ + "d_xs").ptr<R>();
        d_row_weight_ = acts_.get(prefix_ + "d_row_weight").ptr<R>();
        if (exchange_) {
            const std::string o = prefix_ + "ep.";
            oxs_ = acts_.get(o + "xs").ptr<R>();
            oys_ = acts_.get(o + "ys_scratch").ptr<R>();
            od_ys_ = acts_.get(o + "d_ys").ptr<R>();
            od_xs_ = acts_.get(o + "d_xs").ptr<R>();
            exchange_->bind(acts_);
        }
    }
    if (S_ > 0) {
        sw1_ = params.get(sw1_id_).ptr<R>();
        sw3_ = params.get(sw3_id_).ptr<R>();
        sw2_ = params.get(sw2_id_).ptr<R>();
        d_sw1_ = grads.get(sw1_id_).ptr<R>();
        d_sw3_ = grads.get(sw3_id_).ptr<R>();
        d_sw2_ = grads.get(sw2_id_).ptr<R>();
        if (cfg_.shared_gate) {
            sgate_ = params.get(sgate_id_).ptr<R>();
            d_sgate_ = grads.get(sgate_id_).ptr<R>();
        }
        const std::string s = prefix_ + "shared.";
        sh1_ = acts_.get(s + "h1").ptr<R>();
        sh3_ = acts_.get(s + "h3").ptr<R>();
        sact_ = acts_.get(s + "act").ptr<R>();
        sout_ = acts_.get(s + (cfg_.shared_gate ? "out" : "out_scratch")).ptr<R>();
        stmp_ = acts_.get(s + "tmp_scratch").ptr<R>();
        sg_ = acts_.get(s + "gate_values").ptr<R>();
        d_sout_ = acts_.get(s + "d_out").ptr<R>();
        sscratch_ = acts_.get(s + "scratch").ptr<R>();
    }
    bound_ = true;
}

template <class R>
void MoeLayer<R>::init_weights(Rng& rng, double std, double out_std) {
    MOE_CHECK(bound_, "MoeLayer::init_weights before bind");
    if (out_std < 0) out_std = std;
    Rng r_router = rng.fork(0), r_experts = rng.fork(1), r_shared = rng.fork(2);
    if (soft_) {  // Soft MoE branch: phi from r_router, its experts from a fork of it
        soft_->init_weights(r_router, std, out_std);
    } else {
        router_->init_weights(r_router);
        experts_->init_weights(r_experts, std, out_std, cfg_.n_experts, first_expert());
    }
    if (S_ > 0) {
        const int64_t n = S_ * Hs_ * d_;
        for (int64_t i = 0; i < n; ++i) sw1_[i] = R(std * double(r_shared.normal()));
        for (int64_t i = 0; i < n; ++i) sw3_[i] = R(std * double(r_shared.normal()));
        for (int64_t i = 0; i < n; ++i) sw2_[i] = R(out_std * double(r_shared.normal()));
        if (sgate_) std::fill(sgate_, sgate_ + d_, R(0));
    }
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
    if (soft_) {  // Soft MoE branch: each expert runs on its slots; no router losses.
        {
            MOE_PROFILE_SCOPE("soft_moe_fwd");
            soft_->forward(out, x, T);
        }
        if (S_ > 0) shared_forward(out, x, T);
        losses_ = RouterLosses{};
        const int64_t groups = soft_->seq_len() > 0 ? T / soft_->seq_len() : 1;
        const int64_t slots = groups * cfg_.slots_per_expert;  // rows of each expert
        stats_.tokens = T;
        stats_.rows = slots * cfg_.n_experts;
        std::fill(stats_.tokens_per_expert.begin(), stats_.tokens_per_expert.end(), slots);
        stats_.max_load = stats_.mean_load = double(slots);
        stats_.load_imbalance = 1;
        stats_.dropped_fraction = 0;
        stats_.router_entropy = -1;
        stats_.losses = losses_;
        have_forward_ = true;
        return 0;
    }
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
    if (S_ > 0) shared_forward(out, x, T);
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
    if (soft_) {  // Soft MoE branch
        {
            MOE_PROFILE_SCOPE("soft_moe_bwd");
            soft_->backward(d_out, d_x);
        }
        if (S_ > 0) shared_backward(d_out, d_x, in_.T);
        return;
    }
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
    if (S_ > 0) shared_backward(d_out, d_x, in_.T);
}

template <class R>
void MoeLayer<R>::after_step() {
    if (have_forward_ && router_) router_->after_step(plan_);
}

template <class R>
void MoeLayer<R>::shared_forward(R* out, const R* x, int64_t T) {
    // out: [T, d] += g * sum_s shared_s(x); x: [T, d]
    MOE_PROFILE_SCOPE("shared_experts_fwd");
    const int64_t wsz = Hs_ * d_, bsz = max_tokens_ * Hs_;
    for (int64_t s = 0; s < S_; ++s) {
        R* o = s == 0 ? sout_ : stmp_;
        nn::swiglu_mlp_forward(o, sh1_ + s * bsz, sh3_ + s * bsz, sact_ + s * bsz, x,
                               sw1_ + s * wsz, sw3_ + s * wsz, sw2_ + s * wsz, T, d_, Hs_);
        if (s > 0)
            for (int64_t i = 0; i < T * d_; ++i) sout_[i] += stmp_[i];
    }
    if (!cfg_.shared_gate) {
        for (int64_t i = 0; i < T * d_; ++i) out[i] += sout_[i];
        return;
    }
    for (int64_t t = 0; t < T; ++t) {
        double z = 0;
        for (int64_t j = 0; j < d_; ++j) z += double(x[t * d_ + j]) * double(sgate_[j]);
        const R g = R(1.0 / (1.0 + std::exp(-z)));
        sg_[t] = g;
        for (int64_t j = 0; j < d_; ++j) out[t * d_ + j] += g * sout_[t * d_ + j];
    }
}

template <class R>
void MoeLayer<R>::shared_backward(const R* d_out, R* d_x, int64_t T) {
    // d_out: [T, d]; d_x: [T, d] accumulated
    MOE_PROFILE_SCOPE("shared_experts_bwd");
    const R* d_sh = d_out;
    if (cfg_.shared_gate) {
        // out += g * s, g = sigmoid(z), z = x . w:  ds = g d_out, dz = (d_out . s) g (1 - g),
        // dw += dz x, dx += dz w.
        for (int64_t t = 0; t < T; ++t) {
            const R* go = d_out + t * d_;
            const R* so = sout_ + t * d_;
            const double g = double(sg_[t]);
            double dg = 0;
            for (int64_t j = 0; j < d_; ++j) dg += double(go[j]) * double(so[j]);
            const R dz = R(dg * g * (1.0 - g));
            for (int64_t j = 0; j < d_; ++j) {
                d_sout_[t * d_ + j] = R(g) * go[j];
                d_sgate_[j] += dz * in_.x[t * d_ + j];
                d_x[t * d_ + j] += dz * sgate_[j];
            }
        }
        d_sh = d_sout_;
    }
    const int64_t wsz = Hs_ * d_, bsz = max_tokens_ * Hs_;
    for (int64_t s = 0; s < S_; ++s)
        nn::swiglu_mlp_backward(d_x, d_sw1_ + s * wsz, d_sw3_ + s * wsz, d_sw2_ + s * wsz,
                                sscratch_, d_sh, in_.x, sh1_ + s * bsz, sh3_ + s * bsz,
                                sact_ + s * bsz, sw1_ + s * wsz, sw3_ + s * wsz, sw2_ + s * wsz, T,
                                d_, Hs_);
}

template <class R>
ExpertBank<R>& MoeLayer<R>::experts() {
    return soft_ ? soft_->experts() : *experts_;
}

template <class R>
double MoeLayer<R>::saved_bytes_per_token() const {
    size_t bytes = 0;
    for (const Arena::Entry& e : acts_.entries())
        if (!is_transient(e.name)) bytes += size_t(e.shape.numel()) * dtype_size(e.dtype);
    return double(bytes) / double(max_tokens_);
}

template class MoeLayer<float>;
template class MoeLayer<double>;

}  // namespace moe::sparse
