// MultitaskNet: embeddings, input projection, the shared body (bottom MLP, OMoE, MMoE or
// PLE levels), per-task towers and losses; forward and backward over arenas sized at
// construction (see multitask_net.h, multitask_model.h).
#include "tabular/multitask_net.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "kernels/activations.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "nn/mlp.h"

namespace moe::tabular {

namespace {

sparse::MoeConfig moe_config(const MultitaskModelConfig& c) {
    sparse::MoeConfig m;
    m.d_model = c.d_model;
    m.d_expert = c.expert_hidden;
    m.n_experts = c.n_experts;
    m.expert = c.expert == "gelu" ? sparse::ExpertKind::gelu : sparse::ExpertKind::relu;
    return m;
}

template <class R>
void fill_normal(R* w, int64_t n, Rng rng, double std) {
    for (int64_t i = 0; i < n; ++i) w[i] = R(std * double(rng.normal()));
}

}  // namespace

template <class R>
MultitaskNet<R>::MultitaskNet(const MultitaskModelConfig& cfg, const MultitaskInputs& in,
                              int64_t max_batch)
    : cfg_(cfg), in_(in), max_batch_(max_batch) {
    cfg_.validate();
    const int64_t C = int64_t(in.table_rows.size());
    MOE_REQUIRE(int64_t(in.embed_dims.size()) == C, "MultitaskModel: ", C,
                " categorical table sizes but ", in.embed_dims.size(), " embedding widths");
    MOE_REQUIRE(in.n_numeric >= 0, "MultitaskModel: n_numeric=", in.n_numeric, " must be >= 0");
    MOE_REQUIRE(!in.task_kinds.empty(), "MultitaskModel: no task (targets) given");
    MOE_REQUIRE(in.task_weights.size() == in.task_kinds.size() &&
                    in.task_names.size() == in.task_kinds.size(),
                "MultitaskModel: ", in.task_kinds.size(), " task kinds but ",
                in.task_weights.size(), " weights and ", in.task_names.size(), " names");
    MOE_REQUIRE(max_batch >= 1, "MultitaskModel: max_batch=", max_batch, " must be >= 1");
    C_ = C;
    F_ = in.n_numeric;
    K_ = int64_t(in.task_kinds.size());
    d_ = cfg.d_model;
    d_in_ = 0;
    for (int64_t c = 0; c < C; ++c) {
        MOE_REQUIRE(in.table_rows[size_t(c)] >= 1 && in.embed_dims[size_t(c)] >= 1,
                    "MultitaskModel: categorical column ", c,
                    " has table_rows=", in.table_rows[size_t(c)],
                    " embed_dim=", in.embed_dims[size_t(c)], " (both must be >= 1)");
        embed_off_.push_back(d_in_);
        d_in_ += in.embed_dims[size_t(c)];
    }
    d_in_ += F_;
    MOE_REQUIRE(d_in_ >= 1, "MultitaskModel: no input column (no categorical, no numeric)");
    const int64_t B = max_batch, K = K_, d = d_, H = cfg.expert_hidden, Ht = cfg.tower_hidden;
    constexpr DType dt = dtype_of<R>();

    // Parameters, in module-path order; the layers declare their buffers into acts_.
    for (int64_t c = 0; c < C; ++c)
        embed_.push_back(params_.add("embed." + std::to_string(c) + ".weight",
                                     {in.table_rows[size_t(c)], in.embed_dims[size_t(c)]}, dt));
    in_w_ = params_.add("input.weight", {d, d_in_}, dt);
    in_b_ = params_.add("input.bias", {d}, dt);
    const sparse::MoeConfig mc = moe_config(cfg);
    if (cfg.arch == "shared_bottom") {
        bot_w1_ = params_.add("bottom.w1", {H, d}, dt);
        bot_b1_ = params_.add("bottom.b1", {H}, dt);
        bot_w2_ = params_.add("bottom.w2", {d, H}, dt);
        bot_b2_ = params_.add("bottom.b2", {d}, dt);
    } else if (cfg.arch == "omoe" || cfg.arch == "mmoe") {
        const bool one = cfg.arch == "omoe";
        moe_ = std::make_unique<sparse::MultiGateMoe<R>>(mc, one ? 1 : K, B, cfg.gate_top_k);
        moe_->declare(params_, acts_, one ? "omoe." : "mmoe.");
    } else {  // ple
        L_ = cfg.ple_levels;
        for (int64_t l = 0; l < L_; ++l) {
            sparse::PleShape s;
            s.n_tasks = K;
            s.n_shared = cfg.ple_shared_experts;
            s.n_per_task = cfg.ple_task_experts;
            s.shared_output = l + 1 < L_;
            s.per_task_inputs = l > 0;
            s.top_k = cfg.gate_top_k;
            ple_.push_back(std::make_unique<sparse::PleLayer<R>>(mc, s, B));
            ple_.back()->declare(params_, acts_, "ple." + std::to_string(l) + ".");
        }
    }
    for (int64_t k = 0; k < K; ++k) {
        const std::string p = "tower." + std::to_string(k) + ".";
        towers_.push_back({params_.add(p + "w1", {Ht, d}, dt), params_.add(p + "b1", {Ht}, dt),
                           params_.add(p + "w2", {1, Ht}, dt), params_.add(p + "b2", {1}, dt)});
    }
    params_.allocate();
    grads_ = params_.clone_layout();

    // Activations and backward buffers.
    const int64_t slots = std::max<int64_t>(L_, 1) * (K + 1);
    const int e = acts_.add("mt.e", {B, d_in_}, dt), h = acts_.add("mt.h", {B, d}, dt);
    const int bh = acts_.add("mt.bottom_h", {B, H}, dt),
              ba = acts_.add("mt.bottom_act", {B, H}, dt);
    const int bs = acts_.add("mt.bottom_scratch", {2, B, H}, dt);
    const int z = acts_.add("mt.z", {slots, B, d}, dt), dz = acts_.add("mt.d_z", {slots, B, d}, dt);
    const int th = acts_.add("mt.tower_h", {K, B, Ht}, dt);
    const int ta = acts_.add("mt.tower_act", {K, B, Ht}, dt);
    const int dtw = acts_.add("mt.d_tower", {2, B, Ht}, dt);
    const int lg = acts_.add("mt.logits", {K, B}, dt), dl = acts_.add("mt.d_logits", {K, B}, dt);
    const int tg = acts_.add("mt.targets", {K, B}, dt), pr = acts_.add("mt.pred", {B, K}, dt);
    const int dh = acts_.add("mt.d_h", {B, d}, dt), de = acts_.add("mt.d_e", {B, d_in_}, dt);
    const int ct = acts_.add("mt.cats", {B, std::max<int64_t>(C, 1)}, DType::i32);
    acts_.allocate();
    e_ = a(e), h_ = a(h), bot_h_ = a(bh), bot_act_ = a(ba), bot_scratch_ = a(bs);
    z_ = a(z), d_z_ = a(dz), t_h_ = a(th), t_act_ = a(ta), d_t_ = a(dtw);
    logits_ = a(lg), d_logits_ = a(dl), tgt_ = a(tg), pred_ = a(pr), d_h_ = a(dh), d_e_ = a(de);
    cats_ = acts_.get(ct).template ptr<int32_t>();
    if (moe_) moe_->bind(params_, grads_, acts_);
    for (auto& l : ple_) l->bind(params_, grads_, acts_);

    outs_.assign(size_t(K + 1), nullptr);
    d_outs_.assign(size_t(K + 1), nullptr);
    ins_.assign(size_t(K + 1), nullptr);
    d_ins_.assign(size_t(K + 1), nullptr);
    task_losses_.assign(size_t(K), 0.0);
}

template <class R>
void MultitaskNet<R>::init_weights(uint64_t seed) {
    const Rng rng(seed);
    uint64_t stream = 0;
    const double s = cfg_.init_std, d = double(d_);
    for (int64_t c = 0; c < C_; ++c)
        fill_normal(p(embed_[size_t(c)]), params_.get(embed_[size_t(c)]).numel(),
                    rng.fork(stream++), s);
    // He/Kaiming for layers that feed a ReLU; 1/sqrt(fan_in) for those that end a block.
    fill_normal(p(in_w_), d_ * d_in_, rng.fork(stream++), std::sqrt(2.0 / double(d_in_)));
    std::fill(p(in_b_), p(in_b_) + d_, R(0));
    const double H = double(cfg_.expert_hidden), Ht = double(cfg_.tower_hidden);
    if (bot_w1_ >= 0) {
        fill_normal(p(bot_w1_), cfg_.expert_hidden * d_, rng.fork(stream++), std::sqrt(2.0 / d));
        fill_normal(p(bot_w2_), cfg_.expert_hidden * d_, rng.fork(stream++), std::sqrt(1.0 / H));
        std::fill(p(bot_b1_), p(bot_b1_) + cfg_.expert_hidden, R(0));
        std::fill(p(bot_b2_), p(bot_b2_) + d_, R(0));
    }
    // Gates N(0, init_std) with zero bias, then the experts redrawn He-style.
    if (moe_) {
        Rng r = rng.fork(stream++);
        moe_->init_weights(r, s, s);
        Rng re = rng.fork(stream++);
        moe_->experts().init_weights(re, std::sqrt(2.0 / d), std::sqrt(1.0 / H));
    }
    for (auto& l : ple_) {
        Rng r = rng.fork(stream++);
        l->init_weights(r, s, s);
        Rng re = rng.fork(stream++);
        l->experts().init_weights(re, std::sqrt(2.0 / d), std::sqrt(1.0 / H));
    }
    for (const Tower& t : towers_) {
        fill_normal(p(t.w1), cfg_.tower_hidden * d_, rng.fork(stream++), std::sqrt(2.0 / d));
        fill_normal(p(t.w2), cfg_.tower_hidden, rng.fork(stream++), std::sqrt(1.0 / Ht));
        std::fill(p(t.b1), p(t.b1) + cfg_.tower_hidden, R(0));
        p(t.b2)[0] = R(0);
    }
}

template <class R>
const R* MultitaskNet<R>::task_input(int64_t k) const {
    // z_ slots: [level][task 0..K-1, shared]; towers read the last level's task slots
    // (shared bottom and OMoE: the one output, slot 0).
    const int64_t stride = max_batch_ * d_;
    if (!ple_.empty()) return z_ + ((L_ - 1) * (K_ + 1) + k) * stride;
    return z_ + (cfg_.arch == "mmoe" ? k : 0) * stride;
}

template <class R>
R* MultitaskNet<R>::d_task_input(int64_t k) const {
    return d_z_ + (task_input(k) - z_);
}

template <class R>
void MultitaskNet<R>::run_body(int64_t B) {
    const int64_t K = K_, stride = max_batch_ * d_;
    if (bot_w1_ >= 0) {
        nn::relu_mlp_forward(z_, bot_h_, bot_act_, h_, p(bot_w1_), p(bot_b1_), p(bot_w2_),
                             p(bot_b2_), B, d_, cfg_.expert_hidden);
    } else if (moe_) {
        for (int64_t k = 0; k < moe_->n_tasks(); ++k) outs_[size_t(k)] = z_ + k * stride;
        moe_->forward(outs_.data(), h_, B);
    } else {
        for (int64_t l = 0; l < L_; ++l) {
            R* lvl = z_ + l * (K + 1) * stride;
            for (int64_t k = 0; k < K; ++k) outs_[size_t(k)] = lvl + k * stride;
            R* shared = l + 1 < L_ ? lvl + K * stride : nullptr;
            if (l == 0) {
                ple_[0]->forward(outs_.data(), shared, h_, B);
            } else {
                const R* below = lvl - (K + 1) * stride;
                for (int64_t j = 0; j <= K; ++j) ins_[size_t(j)] = below + j * stride;
                ple_[size_t(l)]->forward(outs_.data(), shared, ins_.data(), B);
            }
        }
    }
}

template <class R>
void MultitaskNet<R>::body_backward(int64_t B) {
    const int64_t K = K_, stride = max_batch_ * d_;
    if (bot_w1_ >= 0) {
        nn::relu_mlp_backward(d_h_, g(bot_w1_), g(bot_b1_), g(bot_w2_), g(bot_b2_), bot_scratch_,
                              d_z_, h_, bot_h_, bot_act_, p(bot_w1_), p(bot_w2_), B, d_,
                              cfg_.expert_hidden);
    } else if (moe_) {
        for (int64_t k = 0; k < moe_->n_tasks(); ++k) d_outs_[size_t(k)] = d_z_ + k * stride;
        moe_->backward(d_outs_.data(), d_h_);
    } else {
        for (int64_t l = L_ - 1; l >= 0; --l) {
            R* lvl = d_z_ + l * (K + 1) * stride;
            for (int64_t k = 0; k < K; ++k) d_outs_[size_t(k)] = lvl + k * stride;
            const R* d_shared = l + 1 < L_ ? lvl + K * stride : nullptr;
            if (l == 0) {
                ple_[0]->backward(d_outs_.data(), d_shared, d_h_);
            } else {
                R* below = lvl - (K + 1) * stride;
                for (int64_t j = 0; j <= K; ++j) d_ins_[size_t(j)] = below + j * stride;
                ple_[size_t(l)]->backward(d_outs_.data(), d_shared, d_ins_.data());
            }
        }
    }
}

template <class R>
double MultitaskNet<R>::forward(const int32_t* cats, const float* nums, const float* targets,
                                int64_t B, double loss_share) {
    // cats: [B, C]; nums: [B, F]; targets: [B, K] or null
    MOE_REQUIRE(B >= 1 && B <= max_batch_, "MultitaskModel::forward: batch of B=", B,
                " rows, but B must be in [1, max_batch=", max_batch_, "]");
    MOE_REQUIRE(C_ == 0 || cats != nullptr, "MultitaskModel::forward: cats [B=", B, ", C=", C_,
                "] is null");
    MOE_REQUIRE(F_ == 0 || nums != nullptr, "MultitaskModel::forward: nums [B=", B, ", F=", F_,
                "] is null");
    // Checked before anything is written, so a refused batch leaves the model as it was.
    for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C_; ++c) {
            const int32_t v = cats[b * C_ + c];
            const int64_t n = in_.table_rows[size_t(c)];
            MOE_REQUIRE(v >= 0 && v < n, "MultitaskModel::forward: categorical column ", c,
                        " (embed.", c, ".weight, ", n, " rows) of row ", b, " has embedding row ",
                        v, ", outside [0, ", n, ")");
        }
    B_ = B;
    loss_share_ = loss_share;
    std::copy(cats, cats + B * C_, cats_);
    const int64_t D = d_in_;
    for (int64_t b = 0; b < B; ++b) {
        R* row = e_ + b * D;
        for (int64_t c = 0; c < C_; ++c) {
            const int64_t w = in_.embed_dims[size_t(c)];
            const R* src = p(embed_[size_t(c)]) + int64_t(cats[b * C_ + c]) * w;
            std::copy(src, src + w, row + embed_off_[size_t(c)]);
        }
        for (int64_t f = 0; f < F_; ++f) row[D - F_ + f] = R(nums[b * F_ + f]);
    }
    nn::linear_forward(h_, e_, p(in_w_), p(in_b_), B, D, d_);
    run_body(B);
    const int64_t Ht = cfg_.tower_hidden, K = K_;
    for (int64_t k = 0; k < K; ++k) {
        const Tower& t = towers_[size_t(k)];
        R* th = t_h_ + k * max_batch_ * Ht;
        R* ta = t_act_ + k * max_batch_ * Ht;
        R* lg = logits_ + k * max_batch_;
        nn::linear_forward(th, task_input(k), p(t.w1), p(t.b1), B, d_, Ht);
        kernels::relu_forward(ta, th, B * Ht);
        nn::linear_forward(lg, ta, p(t.w2), p(t.b2), B, Ht, 1);
        const bool binary = in_.task_kinds[size_t(k)] == TargetKind::binary;
        for (int64_t b = 0; b < B; ++b) {
            const double z = double(lg[b]);
            // A stable sigmoid: exp of a non-positive number only.
            const double s =
                z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
            pred_[b * K + k] = R(binary ? s : z);
        }
    }
    have_targets_ = targets != nullptr;
    if (!have_targets_) return 0.0;
    double loss = 0;
    for (int64_t k = 0; k < K; ++k) {
        R* tg = tgt_ + k * max_batch_;
        const R* lg = logits_ + k * max_batch_;
        for (int64_t b = 0; b < B; ++b) tg[b] = R(targets[b * K + k]);
        const double lk = in_.task_kinds[size_t(k)] == TargetKind::binary
                              ? nn::bce_with_logits_forward(lg, tg, B)
                              : nn::mse_forward(lg, tg, B);
        task_losses_[size_t(k)] = lk;
        loss += in_.task_weights[size_t(k)] * lk;
    }
    return loss * loss_share;
}

template <class R>
void MultitaskNet<R>::backward() {
    MOE_REQUIRE(B_ > 0 && have_targets_,
                "MultitaskModel::backward: needs a forward with targets first");
    const int64_t B = B_, K = K_, Ht = cfg_.tower_hidden, stride = max_batch_ * d_;
    const int64_t slots = std::max<int64_t>(L_, 1) * (K + 1);
    std::fill(d_z_, d_z_ + slots * stride, R(0));
    std::fill(d_h_, d_h_ + B * d_, R(0));
    std::fill(d_e_, d_e_ + B * d_in_, R(0));
    R* d_act = d_t_;
    R* d_pre = d_t_ + max_batch_ * Ht;
    for (int64_t k = 0; k < K; ++k) {
        const Tower& t = towers_[size_t(k)];
        const R* th = t_h_ + k * max_batch_ * Ht;
        const R* ta = t_act_ + k * max_batch_ * Ht;
        const R* lg = logits_ + k * max_batch_;
        const R* tg = tgt_ + k * max_batch_;
        R* dl = d_logits_ + k * max_batch_;
        std::fill(dl, dl + B, R(0));
        const R scale = R(loss_share_ * in_.task_weights[size_t(k)]);
        if (in_.task_kinds[size_t(k)] == TargetKind::binary)
            nn::bce_with_logits_backward(dl, lg, tg, B, scale);
        else
            nn::mse_backward(dl, lg, tg, B, scale);
        std::fill(d_act, d_act + B * Ht, R(0));
        std::fill(d_pre, d_pre + B * Ht, R(0));
        nn::linear_backward(d_act, g(t.w2), g(t.b2), dl, ta, p(t.w2), B, Ht, 1);
        kernels::relu_backward(d_pre, d_act, th, B * Ht);
        nn::linear_backward(d_task_input(k), g(t.w1), g(t.b1), d_pre, task_input(k), p(t.w1), B, d_,
                            Ht);
    }
    body_backward(B);
    nn::linear_backward(d_e_, g(in_w_), g(in_b_), d_h_, e_, p(in_w_), B, d_in_, d_);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C_; ++c) {
            const int64_t w = in_.embed_dims[size_t(c)];
            R* dst = g(embed_[size_t(c)]) + int64_t(cats_[b * C_ + c]) * w;
            const R* src = d_e_ + b * d_in_ + embed_off_[size_t(c)];
            for (int64_t i = 0; i < w; ++i) dst[i] += src[i];
        }
}

template <class R>
std::vector<GateInfo> MultitaskNet<R>::gates() const {
    std::vector<GateInfo> out;
    const auto& names = in_.task_names;
    if (moe_) {
        std::vector<std::string> ex;
        for (int64_t e = 0; e < cfg_.n_experts; ++e) ex.push_back("expert " + std::to_string(e));
        if (cfg_.arch == "omoe")
            out.push_back({"shared", 0, -1, ex});
        else
            for (int64_t k = 0; k < K_; ++k) out.push_back({"task " + names[size_t(k)], 0, k, ex});
    }
    const int64_t Es = cfg_.ple_shared_experts, Et = cfg_.ple_task_experts;
    for (int64_t l = 0; l < L_; ++l) {
        const std::string lv = "level " + std::to_string(l) + " ";
        for (int64_t k = 0; k < K_; ++k) {
            GateInfo gi{lv + "task " + names[size_t(k)], l, k, {}};
            for (int64_t j = 0; j < Et; ++j)
                gi.experts.push_back(names[size_t(k)] + " " + std::to_string(j));
            for (int64_t j = 0; j < Es; ++j) gi.experts.push_back("shared " + std::to_string(j));
            out.push_back(gi);
        }
        if (l + 1 < L_) {  // the shared gate: every expert in bank order
            GateInfo gi{lv + "shared", l, -1, {}};
            for (int64_t j = 0; j < Es; ++j) gi.experts.push_back("shared " + std::to_string(j));
            for (int64_t k = 0; k < K_; ++k)
                for (int64_t j = 0; j < Et; ++j)
                    gi.experts.push_back(names[size_t(k)] + " " + std::to_string(j));
            out.push_back(gi);
        }
    }
    return out;
}

template <class R>
const R* MultitaskNet<R>::gate_weights(int64_t i) const {
    MOE_REQUIRE(i >= 0, "MultitaskModel::gate_weights: gate ", i, " must be >= 0");
    if (moe_) {
        MOE_REQUIRE(i < moe_->n_tasks(), "MultitaskModel::gate_weights: gate ", i, " of ",
                    moe_->n_tasks());
        return moe_->gate(i);
    }
    int64_t j = i;
    for (int64_t l = 0; l < L_; ++l) {
        const int64_t n = K_ + (l + 1 < L_ ? 1 : 0);
        if (j < n) return ple_[size_t(l)]->gate(j);
        j -= n;
    }
    MOE_REQUIRE(false, "MultitaskModel::gate_weights: gate ", i, " of ", i - j, " (arch ",
                cfg_.arch, ")");
    return nullptr;
}

template <class R>
int64_t MultitaskNet<R>::num_params() const {
    int64_t n = 0;
    for (const auto& e : params_.entries()) n += e.shape.numel();
    return n;
}

template <class R>
double MultitaskNet<R>::forward_flops_per_row() const {
    const double d = double(d_), H = double(cfg_.expert_hidden), K = double(K_);
    const double expert = 2.0 * d * H;  // two matrices d x H per expert and row
    double f = double(d_in_) * d;
    if (bot_w1_ >= 0) {
        f += expert;
    } else if (moe_) {
        const double E = double(cfg_.n_experts), G = double(moe_->n_tasks());
        // Dense gates run every expert; top-k ones at most the union of the gates' picks.
        const double ran = cfg_.gate_top_k == 0 ? E : std::min(E, G * double(cfg_.gate_top_k));
        f += ran * expert + G * E * d;
    } else {
        const double Es = double(cfg_.ple_shared_experts), Et = double(cfg_.ple_task_experts);
        for (int64_t l = 0; l < L_; ++l) {
            const double all = Es + K * Et;
            f += all * expert + K * (Es + Et) * d + (l + 1 < L_ ? all * d : 0.0);
        }
    }
    f += K * (d * double(cfg_.tower_hidden) + double(cfg_.tower_hidden));
    return 2.0 * f;
}

template class MultitaskNet<float>;
template class MultitaskNet<double>;

}  // namespace moe::tabular
