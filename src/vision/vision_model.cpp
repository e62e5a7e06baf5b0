#include "vision/vision_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/parallel_for.h"
#include "core/profile.h"
#include "core/rng.h"
#include "kernels/activations.h"
#include "kernels/elementwise.h"
#include "kernels/norms.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "nn/mlp.h"

namespace moe::vision {

namespace {

// out[b, c] = mean over t of in[b, t, c]; in: [B, T, C].
void mean_tokens(float* out, const float* in, int64_t B, int64_t T, int64_t C) {
    const float inv = 1.0f / float(T);
    parallel_for(B, B * T * C >= (1 << 15), [&](int64_t b) {
        float* o = out + b * C;
        std::fill(o, o + C, 0.0f);
        for (int64_t t = 0; t < T; ++t) {
            const float* x = in + (b * T + t) * C;
            for (int64_t c = 0; c < C; ++c) o[c] += x[c];
        }
        for (int64_t c = 0; c < C; ++c) o[c] *= inv;
    });
}

// d_in[b, t, c] = d_out[b, c] / T (written, not accumulated).
void mean_tokens_backward(float* d_in, const float* d_out, int64_t B, int64_t T, int64_t C) {
    const float inv = 1.0f / float(T);
    parallel_for(B, B * T * C >= (1 << 15), [&](int64_t b) {
        for (int64_t t = 0; t < T; ++t)
            for (int64_t c = 0; c < C; ++c) d_in[(b * T + t) * C + c] = d_out[b * C + c] * inv;
    });
}

}  // namespace

nn::AttentionConfig VisionModel::attn_config() const {
    nn::AttentionConfig ac;
    ac.n_heads = cfg_.n_heads;
    ac.head_dim = cfg_.d_model / cfg_.n_heads;
    ac.causal = false;  // an image's patches all see each other
    ac.rope = false;    // positions come from the learned position embedding
    return ac;
}

VisionModel::VisionModel(const VisionModelConfig& cfg, int64_t max_batch,
                         comm::Comm* expert_parallel)
    : cfg_(cfg), max_batch_(max_batch) {
    cfg_.validate();
    MOE_CHECK(max_batch > 0, "VisionModel: max_batch must be > 0, got ", max_batch);
    const int64_t B = max_batch, C = cfg.d_model, H = cfg.d_ff, K = cfg.n_classes;
    Ts_ = cfg.stem_tokens();
    T_ = cfg.tokens_per_image();
    const int64_t N = B * T_, Ns = B * Ts_, NH = cfg.n_heads, D = C / std::max<int64_t>(1, NH);

    // Parameters, in module-path order.
    if (cfg.stem == "conv") {
        conv_stem_ =
            std::make_unique<ConvStem>(cfg.height, cfg.width, cfg.channels, cfg.conv_channels,
                                       cfg.convs_per_stage, cfg.norm_eps, B);
        conv_stem_->declare(params_, "stem.");
        stem_proj_w_ = params_.add("stem.proj.weight", {C, cfg.stem_channels()});
        stem_proj_b_ = params_.add("stem.proj.bias", {C});
    } else {
        nn::Conv2dShape s;
        s.in_channels = cfg.channels;
        s.out_channels = C;
        s.kernel = s.stride = cfg.patch;
        s.padding = 0;
        s.height = cfg.height;
        s.width = cfg.width;
        patch_embed_ = std::make_unique<nn::Conv2d>(s);
        patch_w_ = params_.add("patch_embed.weight", {C, cfg.channels, cfg.patch, cfg.patch});
        patch_b_ = params_.add("patch_embed.bias", {C});
    }
    if (cfg.attention) pos_emb_ = params_.add("pos_emb", {Ts_, C});
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const std::string p = "blocks." + std::to_string(l) + ".";
        BlockParams bp;
        if (cfg.attention) {
            bp.norm1_w = params_.add(p + "norm1.weight", {C});
            bp.norm1_b = params_.add(p + "norm1.bias", {C});
            bp.wq = params_.add(p + "attn.wq", {C, C});
            bp.wk = params_.add(p + "attn.wk", {C, C});
            bp.wv = params_.add(p + "attn.wv", {C, C});
            bp.wo = params_.add(p + "attn.wo", {C, C});
        }
        bp.norm2_w = params_.add(p + "norm2.weight", {C});
        bp.norm2_b = params_.add(p + "norm2.bias", {C});
        if (cfg.is_moe_block(l)) {
            sparse::MoeConfig m = cfg.moe;
            m.d_model = C;
            m.causal = false;
            moe_.push_back(sparse::make_moe_block<float>(m, N, T_));
            moe_.back()->set_expert_parallel(expert_parallel);
            moe_.back()->declare(params_, p + "moe.");
        } else {
            moe_.push_back(nullptr);
            bp.w1 = params_.add(p + "mlp.w1", {H, C});
            bp.b1 = params_.add(p + "mlp.b1", {H});
            bp.w2 = params_.add(p + "mlp.w2", {C, H});
            bp.b2 = params_.add(p + "mlp.b2", {C});
        }
        bp_.push_back(bp);
    }
    final_norm_w_ = params_.add("final_norm.weight", {C});
    final_norm_b_ = params_.add("final_norm.bias", {C});
    // "flatten": the head sees every token's features in place ([T * C] per image), as the
    // classic CNN head does; "mean": the mean token.
    head_w_ = params_.add("head.weight", {K, flatten_head() ? T_ * C : C});
    head_b_ = params_.add("head.bias", {K});
    params_.allocate();
    grads_ = params_.clone_layout();
    if (conv_stem_) conv_stem_->bind(params_, grads_);
    for (auto& m : moe_)
        if (m) m->bind(params_, grads_);

    // Activations kept for backward, then gradient buffers.
    stem_out_ = conv_stem_ ? acts_.add("stem_out", {Ns, cfg.stem_channels()}) : -1;
    tokens_ = acts_.add("tokens", {Ns, C});
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const std::string p = "blocks." + std::to_string(l) + ".";
        BlockActs ba;
        ba.x_in = acts_.add(p + "x_in", {N, C});
        ba.n1_out = ba.n1_mean = ba.n1_rstd = ba.q = ba.k = ba.v = ba.att = ba.y = -1;
        if (cfg.attention) {
            ba.n1_out = acts_.add(p + "n1_out", {N, C});
            ba.n1_mean = acts_.add(p + "n1_mean", {N});
            ba.n1_rstd = acts_.add(p + "n1_rstd", {N});
            ba.q = acts_.add(p + "q", {B, NH, T_, D});
            ba.k = acts_.add(p + "k", {B, NH, T_, D});
            ba.v = acts_.add(p + "v", {B, NH, T_, D});
            ba.att = acts_.add(p + "att", {B, NH, T_, T_});
            ba.y = acts_.add(p + "y", {N, C});
        }
        ba.x_mid = acts_.add(p + "x_mid", {N, C});
        ba.n2_out = acts_.add(p + "n2_out", {N, C});
        ba.n2_mean = acts_.add(p + "n2_mean", {N});
        ba.n2_rstd = acts_.add(p + "n2_rstd", {N});
        ba.h = ba.act = -1;
        if (!cfg.is_moe_block(l)) {
            ba.h = acts_.add(p + "h", {N, H});
            ba.act = acts_.add(p + "act", {N, H});
        }
        ba_.push_back(ba);
    }
    x_final_ = acts_.add("x_final", {N, C});
    const int64_t head_rows = flatten_head() ? N : B;  // rows the final norm sees
    pooled_ = acts_.add("pooled", {B, C});
    fn_out_ = acts_.add("final_norm_out", {head_rows, C});
    fn_mean_ = acts_.add("final_norm_mean", {head_rows});
    fn_rstd_ = acts_.add("final_norm_rstd", {head_rows});
    probs_id_ = acts_.add("probs", {B, K});  // logits, then probabilities
    labels_id_ = acts_.add("labels", {B}, DType::i32);
    domains_id_ = acts_.add("token_domains", {N}, DType::i32);
    d_logits_ = acts_.add("d_logits", {B, K});
    d_pooled_ = acts_.add("d_pooled", {2, head_rows, C});
    d_stream_ = acts_.add("d_stream", {N, C});
    d_norm_ = acts_.add("d_norm", {N, C});
    d_stem_ = acts_.add("d_stem", {Ns, std::max(C, cfg.stem_channels())});
    int64_t scratch = 2 * N * H;
    if (cfg.attention)
        scratch = std::max(scratch, nn::attention_scratch_size(B, T_, attn_config()));
    if (conv_stem_) scratch = std::max(scratch, Ns * cfg.stem_channels());
    scratch_ = acts_.add("scratch", {std::max<int64_t>(scratch, 1)});
    acts_.allocate();
    probs_ = a(probs_id_);
}

int64_t VisionModel::num_params() const {
    int64_t n = 0;
    for (const auto& e : params_.entries()) n += e.shape.numel();
    return n;
}

double VisionModel::forward_flops_per_image() const {
    const VisionModelConfig& c = cfg_;
    const double C = double(c.d_model), T = double(T_), Ts = double(Ts_);
    double f = 0;
    if (c.stem == "conv") {
        int64_t h = c.height, w = c.width, in = c.channels;
        for (int64_t out : c.conv_channels) {
            for (int64_t j = 0; j < c.convs_per_stage; ++j, in = out)
                f += 2.0 * double(h * w) * double(out) * double(in) * 9;
            h /= 2, w /= 2;
        }
        f += 2.0 * Ts * double(c.stem_channels()) * C;
    } else {
        f += 2.0 * Ts * C * double(c.channels * c.patch * c.patch);
    }
    for (int64_t l = 0; l < c.n_layers; ++l) {
        if (c.attention) f += 2.0 * T * C * C * 4 + 2.0 * T * T * C * 2;
        if (!c.is_moe_block(l)) {
            f += 2.0 * T * C * double(c.d_ff) * 2;
            continue;
        }
        const sparse::MoeConfig& m = c.moe;
        const double mats = m.expert == sparse::ExpertKind::swiglu ? 3 : 2;
        const double expert = 2.0 * C * double(m.d_expert) * mats;  // one token, one expert
        // Token choice: top_k experts per token. Soft MoE: E * slots slots per image, each
        // a mix of the T tokens (dispatch and combine: 2 x 2 T S C).
        double routed = T * double(m.top_k);
        if (m.router == "soft") {
            const double S = double(m.n_experts * m.soft.slots_per_expert);
            routed = S;
            f += 2.0 * 2.0 * T * S * C;
        } else if (m.router == "dense") {
            routed = T * double(m.n_experts);
        }
        f += routed * expert + 2.0 * T * C * double(m.n_experts);  // experts + router
        if (m.n_shared > 0)
            f += T * double(m.n_shared) * 2.0 * C *
                 double(m.d_shared > 0 ? m.d_shared : m.d_expert) * mats;
    }
    f += 2.0 * C * double(c.n_classes) * (c.head == "flatten" ? T : 1.0);
    return f;
}

std::vector<VisionShardedParam> VisionModel::sharded_params() const {
    std::vector<VisionShardedParam> out;
    for (size_t l = 0; l < moe_.size(); ++l) {
        const auto& m = moe_[l];
        if (!m || !m->routing_plan()) continue;  // Soft MoE is never expert-parallel
        const std::string prefix = "blocks." + std::to_string(l) + ".moe.experts.";
        for (const auto& e : params_.entries())
            if (e.name.compare(0, prefix.size(), prefix) == 0)
                out.push_back({e.name, m->config().n_experts, m->first_expert()});
    }
    return out;
}

size_t VisionModel::activation_bytes() const {
    size_t n = acts_.bytes() + (conv_stem_ ? conv_stem_->activation_bytes() : 0);
    for (const auto& m : moe_)
        if (m) n += m->activations().bytes();
    return n;
}

void VisionModel::init_weights(uint64_t seed) {
    const Rng base(seed);
    const float std = float(cfg_.init_std);
    const float std_out =
        float(cfg_.init_std / std::sqrt(2.0 * double(std::max<int64_t>(1, cfg_.n_layers))));
    const auto& entries = params_.entries();
    for (size_t i = 0; i < entries.size(); ++i) {
        const auto& e = entries[i];
        if (e.name.find(".moe.") != std::string::npos) continue;  // the MoE layer's own init
        if (e.name.rfind("stem.", 0) == 0 && e.name.rfind("stem.proj.", 0) != 0) continue;
        float* w = params_.get(int(i)).ptr<float>();
        const int64_t n = e.shape.numel();
        if (e.name.ends_with("norm1.weight") || e.name.ends_with("norm2.weight") ||
            e.name == "final_norm.weight") {
            std::fill(w, w + n, 1.0f);
            continue;
        }
        if (e.shape.rank == 1) continue;  // biases start at 0
        float stddev = std;
        if (e.name.ends_with("attn.wo") || e.name.ends_with("mlp.w2")) stddev = std_out;
        // The stem's output projections see unnormalised features of fan_in inputs: 1/sqrt(fan_in)
        // keeps the tokens at unit scale whatever the stem's width.
        if (e.name == "stem.proj.weight" || e.name == "patch_embed.weight")
            stddev = float(1.0 / std::sqrt(double(n / e.shape[0])));
        Rng rng = base.fork(i);  // one stream per tensor: adding a tensor moves no other
        for (int64_t j = 0; j < n; ++j) w[j] = stddev * rng.normal();
    }
    if (conv_stem_) conv_stem_->init_weights(base.fork(999983).next_u64());
    for (size_t l = 0; l < moe_.size(); ++l) {
        if (!moe_[l]) continue;
        Rng rng = base.fork(1000003 + l);
        moe_[l]->init_weights(rng, cfg_.init_std, std_out);
    }
}

void VisionModel::after_step() {
    for (auto& m : moe_)
        if (m) m->after_step();
}

double VisionModel::forward(const float* images, const int32_t* labels, int64_t B,
                            const VisionForwardOptions& opt) {
    MOE_CHECK(B > 0 && B <= max_batch_, "VisionModel::forward: batch ", B,
              " outside [1, max_batch=", max_batch_, "]");
    B_ = B;
    images_ = images;
    have_labels_ = labels != nullptr;
    loss_share_ = opt.loss_share;
    const int64_t C = cfg_.d_model, H = cfg_.d_ff, K = cfg_.n_classes, T = T_, Ts = Ts_;
    const int64_t N = B * T, Ns = B * Ts;
    const float eps = float(cfg_.norm_eps);
    float* tokens = a(tokens_);

    // Stem: images -> [B * Ts, C] tokens.
    if (conv_stem_) {
        conv_stem_->forward(a(stem_out_), images, B);
        MOE_PROFILE_SCOPE("stem_proj_fwd");
        nn::linear_forward(tokens, a(stem_out_), p(stem_proj_w_), p(stem_proj_b_), Ns,
                           cfg_.stem_channels(), C);
    } else {
        MOE_PROFILE_SCOPE("patch_embed_fwd");
        patch_embed_->forward(tokens, images, p(patch_w_), p(patch_b_), B);
    }
    if (pos_emb_ >= 0) {
        const float* pos = p(pos_emb_);
        for (int64_t b = 0; b < B; ++b)
            kernels::add(tokens + b * Ts * C, tokens + b * Ts * C, pos, Ts * C);
    }
    float* x0 = cfg_.n_layers > 0 ? a(ba_[0].x_in) : a(x_final_);
    if (cfg_.tokens == "pooled")
        mean_tokens(x0, tokens, B, Ts, C);
    else
        std::memcpy(x0, tokens, size_t(N * C) * sizeof(float));

    // Domains per token for assigned routing: every token of an image has its domain.
    int32_t* token_domains = nullptr;
    if (opt.domains) {
        token_domains = acts_.get(domains_id_).ptr<int32_t>();
        for (int64_t b = 0; b < B; ++b)
            std::fill(token_domains + b * T, token_domains + (b + 1) * T, opt.domains[b]);
    }

    router_loss_ = 0;
    const nn::AttentionConfig ac = cfg_.attention ? attn_config() : nn::AttentionConfig{};
    for (size_t l = 0; l < ba_.size(); ++l) {
        MOE_PROFILE_SCOPE("norms_residual");
        const BlockParams& P = bp_[l];
        const BlockActs& A = ba_[l];
        float* x = a(A.x_in);
        float* x_mid = a(A.x_mid);
        float* x_out = l + 1 < ba_.size() ? a(ba_[l + 1].x_in) : a(x_final_);
        if (cfg_.attention) {
            kernels::layernorm_forward(a(A.n1_out), a(A.n1_mean), a(A.n1_rstd), x, p(P.norm1_w),
                                       p(P.norm1_b), N, C, eps);
            {
                MOE_PROFILE_SCOPE("attention_fwd");
                const nn::AttentionSaved<float> saved{a(A.q), a(A.k), a(A.v), a(A.att), a(A.y)};
                nn::attention_forward(x_mid, saved, a(A.n1_out), p(P.wq), p(P.wk), p(P.wv), p(P.wo),
                                      B, T, ac);
            }
            kernels::add(x_mid, x_mid, x, N * C);
        } else {
            std::memcpy(x_mid, x, size_t(N * C) * sizeof(float));
        }
        kernels::layernorm_forward(a(A.n2_out), a(A.n2_mean), a(A.n2_rstd), x_mid, p(P.norm2_w),
                                   p(P.norm2_b), N, C, eps);
        if (moe_[l]) {
            sparse::RouterInput<float> extras;
            extras.labels = token_domains;
            extras.training = opt.training;
            extras.seed = opt.seed * 1000003ull + l;  // a different noise stream per layer
            extras.first_token = opt.first_image * T;
            router_loss_ += moe_[l]->forward(x_out, a(A.n2_out), N, extras);
        } else {
            MOE_PROFILE_SCOPE("dense_ffn_fwd");
            nn::gelu_mlp_forward(x_out, a(A.h), a(A.act), a(A.n2_out), p(P.w1), p(P.b1), p(P.w2),
                                 p(P.b2), N, C, H);
        }
        kernels::add(x_out, x_out, x_mid, N * C);
    }

    MOE_PROFILE_SCOPE("head_fwd");
    if (flatten_head()) {  // every token normalised, [B, T * C] into the head
        kernels::layernorm_forward(a(fn_out_), a(fn_mean_), a(fn_rstd_), a(x_final_),
                                   p(final_norm_w_), p(final_norm_b_), N, C, eps);
    } else {
        mean_tokens(a(pooled_), a(x_final_), B, T, C);
        kernels::layernorm_forward(a(fn_out_), a(fn_mean_), a(fn_rstd_), a(pooled_),
                                   p(final_norm_w_), p(final_norm_b_), B, C, eps);
    }
    const int64_t head_in = flatten_head() ? T * C : C;
    nn::linear_forward(probs_, a(fn_out_), p(head_w_), p(head_b_), B, head_in, K);
    int32_t* lab = acts_.get(labels_id_).ptr<int32_t>();
    if (labels)
        std::memcpy(lab, labels, size_t(B) * sizeof(int32_t));
    else
        std::fill(lab, lab + B, -1);  // probabilities only
    const double ce = nn::cross_entropy_forward(probs_, probs_, lab, B, K);
    return labels ? loss_share_ * ce : 0.0;
}

void VisionModel::backward() {
    MOE_CHECK(have_labels_, "VisionModel::backward: the last forward had no labels");
    const int64_t B = B_, C = cfg_.d_model, H = cfg_.d_ff, K = cfg_.n_classes, T = T_, Ts = Ts_;
    const int64_t N = B * T, Ns = B * Ts;
    const nn::AttentionConfig ac = cfg_.attention ? attn_config() : nn::AttentionConfig{};
    float* d_stream = a(d_stream_);
    float* d_norm = a(d_norm_);
    const size_t nc_bytes = size_t(N * C) * sizeof(float);

    {
        MOE_PROFILE_SCOPE("head_bwd");
        float* d_logits = a(d_logits_);
        const int64_t rows = flatten_head() ? N : B, head_in = flatten_head() ? T * C : C;
        float* d_fn = a(d_pooled_);
        float* d_pooled = a(d_pooled_) + rows * C;
        std::memset(d_logits, 0, size_t(B * K) * sizeof(float));
        nn::cross_entropy_backward(d_logits, probs_, acts_.get(labels_id_).ptr<int32_t>(), B, K,
                                   float(loss_share_));
        std::memset(d_fn, 0, size_t(2 * rows * C) * sizeof(float));
        nn::linear_backward(d_fn, g(head_w_), g(head_b_), d_logits, a(fn_out_), p(head_w_), B,
                            head_in, K);
        if (flatten_head()) {
            std::memset(d_stream, 0, nc_bytes);
            kernels::layernorm_backward(d_stream, g(final_norm_w_), g(final_norm_b_), d_fn,
                                        a(x_final_), p(final_norm_w_), a(fn_mean_), a(fn_rstd_),
                                        N, C);
        } else {
            kernels::layernorm_backward(d_pooled, g(final_norm_w_), g(final_norm_b_), d_fn,
                                        a(pooled_), p(final_norm_w_), a(fn_mean_), a(fn_rstd_), B,
                                        C);
            mean_tokens_backward(d_stream, d_pooled, B, T, C);
        }
    }

    for (size_t l = ba_.size(); l-- > 0;) {
        MOE_PROFILE_SCOPE("norms_residual");
        const BlockParams& P = bp_[l];
        const BlockActs& A = ba_[l];
        // Feed-forward branch: d_stream holds d/d(x_out) and gains the branch's d/d(x_mid).
        std::memset(d_norm, 0, nc_bytes);
        if (moe_[l]) {
            moe_[l]->backward(d_stream, d_norm);
        } else {
            MOE_PROFILE_SCOPE("dense_ffn_bwd");
            nn::gelu_mlp_backward(d_norm, g(P.w1), g(P.b1), g(P.w2), g(P.b2), a(scratch_), d_stream,
                                  a(A.n2_out), a(A.h), a(A.act), p(P.w1), p(P.w2), N, C, H);
        }
        kernels::layernorm_backward(d_stream, g(P.norm2_w), g(P.norm2_b), d_norm, a(A.x_mid),
                                    p(P.norm2_w), a(A.n2_mean), a(A.n2_rstd), N, C);
        if (!cfg_.attention) continue;  // x_mid = x_in
        std::memset(d_norm, 0, nc_bytes);
        {
            MOE_PROFILE_SCOPE("attention_bwd");
            const nn::AttentionSaved<float> saved{a(A.q), a(A.k), a(A.v), a(A.att), a(A.y)};
            nn::attention_backward(d_norm, g(P.wq), g(P.wk), g(P.wv), g(P.wo), a(scratch_),
                                   d_stream, saved, a(A.n1_out), p(P.wq), p(P.wk), p(P.wv), p(P.wo),
                                   B, T, ac);
        }
        kernels::layernorm_backward(d_stream, g(P.norm1_w), g(P.norm1_b), d_norm, a(A.x_in),
                                    p(P.norm1_w), a(A.n1_mean), a(A.n1_rstd), N, C);
    }

    // d_stream = d(x0) -> d(tokens) [Ns, C].
    float* d_tokens = d_stream;
    if (cfg_.tokens == "pooled") {
        d_tokens = a(d_stem_);  // [Ns, C]
        mean_tokens_backward(d_tokens, d_stream, B, Ts, C);
    }
    if (pos_emb_ >= 0) {
        float* gp = g(pos_emb_);
        for (int64_t b = 0; b < B; ++b) kernels::add(gp, gp, d_tokens + b * Ts * C, Ts * C);
    }
    if (conv_stem_) {
        const int64_t Cs = cfg_.stem_channels();
        // Must not alias d_tokens, which lives in d_stem when pooled: then the scratch
        // (sized for it) takes the projection's input gradient.
        float* d_stem_out = d_tokens == a(d_stem_) ? a(scratch_) : a(d_stem_);
        {
            MOE_PROFILE_SCOPE("stem_proj_bwd");
            std::memset(d_stem_out, 0, size_t(Ns * Cs) * sizeof(float));
            nn::linear_backward(d_stem_out, g(stem_proj_w_), g(stem_proj_b_), d_tokens,
                                a(stem_out_), p(stem_proj_w_), Ns, Cs, C);
        }
        conv_stem_->backward(d_stem_out, B);
    } else {
        MOE_PROFILE_SCOPE("patch_embed_bwd");
        patch_embed_->backward(nullptr, g(patch_w_), g(patch_b_), d_tokens, images_, p(patch_w_),
                               B);
    }
}

}  // namespace moe::vision
