#include "lm/transformer_lm.h"

#include <cmath>
#include <cstring>

#include "core/profile.h"
#include "core/rng.h"
#include "kernels/elementwise.h"
#include "kernels/norms.h"
#include "nn/embedding.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "nn/mlp.h"

namespace moe::lm {

void LmConfig::validate() const {
    MOE_REQUIRE(vocab_size > 0, "model.vocab_size must be > 0, got ", vocab_size);
    MOE_REQUIRE(d_model > 0, "model.d_model must be > 0, got ", d_model);
    MOE_REQUIRE(n_layers > 0, "model.n_layers must be > 0, got ", n_layers);
    MOE_REQUIRE(n_heads > 0 && d_model % n_heads == 0, "model.n_heads (", n_heads,
                ") must divide model.d_model (", d_model, ")");
    MOE_REQUIRE((d_model / n_heads) % 2 == 0,
                "model.d_model / model.n_heads must be even for RoPE, got ", d_model / n_heads);
    MOE_REQUIRE(d_ff > 0, "model.d_ff must be > 0, got ", d_ff);
    MOE_REQUIRE(seq_len > 0, "model.seq_len must be > 0, got ", seq_len);
    MOE_REQUIRE(norm_eps > 0, "model.norm_eps must be > 0, got ", norm_eps);
    MOE_REQUIRE(ffn == "dense" || ffn == "moe", "model.ffn must be \"dense\" or \"moe\", got \"",
                ffn, "\"");
    MOE_REQUIRE(dense_layers >= 0 && dense_layers <= n_layers, "model.dense_layers (", dense_layers,
                ") must be in [0, model.n_layers = ", n_layers, "]");
    if (ffn == "moe") {
        sparse::MoeConfig m = moe;
        m.d_model = d_model;
        m.causal = true;
        m.validate();
    }
}

nn::AttentionConfig TransformerLM::attn_config() const {
    nn::AttentionConfig a;
    a.n_heads = cfg_.n_heads;
    a.head_dim = cfg_.d_model / cfg_.n_heads;
    a.causal = true;
    a.rope = true;
    a.rope_theta = cfg_.rope_theta;
    return a;
}

TransformerLM::TransformerLM(const LmConfig& cfg, int64_t max_batch, comm::Comm* expert_parallel)
    : cfg_(cfg), max_batch_(max_batch) {
    cfg_.validate();
    MOE_CHECK(max_batch > 0, "TransformerLM: max_batch must be > 0, got ", max_batch);
    const int64_t V = cfg.vocab_size, C = cfg.d_model, H = cfg.d_ff, L = cfg.n_layers;
    const int64_t B = max_batch, T = cfg.seq_len, N = B * T, NH = cfg.n_heads, D = C / NH;

    // Parameters, in module-path order.
    tok_emb_ = params_.add("tok_emb", {V, C});
    for (int64_t l = 0; l < L; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        LayerParams lp;
        lp.attn_norm = params_.add(p + "attn_norm", {C});
        lp.wq = params_.add(p + "attn.wq", {C, C});
        lp.wk = params_.add(p + "attn.wk", {C, C});
        lp.wv = params_.add(p + "attn.wv", {C, C});
        lp.wo = params_.add(p + "attn.wo", {C, C});
        lp.ffn_norm = params_.add(p + "ffn_norm", {C});
        lp.w1 = lp.w3 = lp.w2 = -1;
        if (cfg.is_moe_layer(l)) {
            sparse::MoeConfig m = cfg.moe;
            m.d_model = C;
            m.causal = true;
            moe_.push_back(sparse::make_moe_block<float>(m, N, T));
            moe_.back()->set_expert_parallel(expert_parallel);
            moe_.back()->declare(params_, p + "moe.");
        } else {
            moe_.push_back(nullptr);
            lp.w1 = params_.add(p + "ffn.w1", {H, C});
            lp.w3 = params_.add(p + "ffn.w3", {H, C});
            lp.w2 = params_.add(p + "ffn.w2", {C, H});
        }
        lp_.push_back(lp);
    }
    final_norm_ = params_.add("final_norm", {C});
    lm_head_ = cfg.tie_embeddings ? tok_emb_ : params_.add("lm_head", {V, C});
    params_.allocate();
    grads_ = params_.clone_layout();
    for (auto& m : moe_)
        if (m) m->bind(params_, grads_);

    // Activations kept for backward, then gradient buffers shared by all layers.
    tokens_id_ = acts_.add("tokens", {N}, DType::i32);
    targets_id_ = acts_.add("targets", {N}, DType::i32);
    for (int64_t l = 0; l < L; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        LayerActs la;
        la.x_in = acts_.add(p + "x_in", {N, C});
        la.attn_norm_out = acts_.add(p + "attn_norm_out", {N, C});
        la.attn_rstd = acts_.add(p + "attn_rstd", {N});
        la.q = acts_.add(p + "q", {B, NH, T, D});
        la.k = acts_.add(p + "k", {B, NH, T, D});
        la.v = acts_.add(p + "v", {B, NH, T, D});
        la.att = acts_.add(p + "att", {B, NH, T, T});
        la.y = acts_.add(p + "y", {N, C});
        la.x_mid = acts_.add(p + "x_mid", {N, C});
        la.ffn_norm_out = acts_.add(p + "ffn_norm_out", {N, C});
        la.ffn_rstd = acts_.add(p + "ffn_rstd", {N});
        la.h1 = la.h3 = la.act = -1;
        if (!cfg.is_moe_layer(l)) {  // an MoE layer keeps its own activations
            la.h1 = acts_.add(p + "h1", {N, H});
            la.h3 = acts_.add(p + "h3", {N, H});
            la.act = acts_.add(p + "act", {N, H});
        }
        la_.push_back(la);
    }
    x_final_ = acts_.add("x_final", {N, C});
    final_norm_out_ = acts_.add("final_norm_out", {N, C});
    final_rstd_ = acts_.add("final_rstd", {N});
    logits_id_ = acts_.add("logits", {N, V});  // becomes probabilities when targets are given
    d_logits_ = acts_.add("d_logits", {N, V});
    d_stream_ = acts_.add("d_stream", {N, C});
    d_norm_ = acts_.add("d_norm", {N, C});
    const int64_t scratch = std::max(nn::attention_scratch_size(B, T, attn_config()), 3 * N * H);
    scratch_ = acts_.add("scratch", {scratch});
    acts_.allocate();
    logits_ = a(logits_id_);
}

int64_t TransformerLM::num_params() const {
    int64_t n = 0;
    for (const auto& e : params_.entries()) n += e.shape.numel();
    return n;
}

std::vector<ShardedParam> TransformerLM::sharded_params() const {
    std::vector<ShardedParam> out;
    for (size_t l = 0; l < moe_.size(); ++l) {
        const auto& m = moe_[l];
        if (!m || !m->routing_plan()) continue;  // Soft MoE is never expert-parallel
        const std::string prefix = "layers." + std::to_string(l) + ".moe.experts.";
        for (const auto& e : params_.entries())
            if (e.name.compare(0, prefix.size(), prefix) == 0)
                out.push_back({e.name, m->config().n_experts, m->first_expert()});
    }
    return out;
}

size_t TransformerLM::activation_bytes() const {
    size_t n = acts_.bytes();
    for (const auto& m : moe_)
        if (m) n += m->activations().bytes();
    return n;
}

void TransformerLM::init_weights(uint64_t seed) {
    const Rng base(seed);
    const float std_out = float(cfg_.init_std / std::sqrt(2.0 * double(cfg_.n_layers)));
    const auto& entries = params_.entries();
    for (size_t i = 0; i < entries.size(); ++i) {
        const auto& e = entries[i];
        if (e.name.find(".moe.") != std::string::npos) continue;  // the MoE layer's own init
        float* w = params_.get(int(i)).ptr<float>();
        const int64_t n = e.shape.numel();
        if (e.shape.rank == 1) {  // norm gains
            for (int64_t j = 0; j < n; ++j) w[j] = 1.0f;
            continue;
        }
        const bool writes_stream = e.name.ends_with("attn.wo") || e.name.ends_with("ffn.w2");
        const float stddev = writes_stream ? std_out : float(cfg_.init_std);
        Rng rng = base.fork(i);  // one stream per tensor: adding a tensor moves no other
        for (int64_t j = 0; j < n; ++j) w[j] = stddev * rng.normal();
    }
    // MoE layers initialise their own tensors (router, experts, shared experts): the same
    // std, and the residual-scaled std for the expert down projections.
    for (size_t l = 0; l < moe_.size(); ++l) {
        if (!moe_[l]) continue;
        Rng rng = base.fork(1000003 + l);
        moe_[l]->init_weights(rng, cfg_.init_std, std_out);
    }
}

void TransformerLM::after_step() {
    for (auto& m : moe_)
        if (m) m->after_step();
}

double TransformerLM::forward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                              const ForwardOptions& opt) {
    MOE_CHECK(B > 0 && B <= max_batch_, "TransformerLM::forward: batch ", B,
              " outside [1, max_batch=", max_batch_, "]");
    MOE_CHECK(T > 0 && T <= cfg_.seq_len, "TransformerLM::forward: sequence length ", T,
              " outside [1, seq_len=", cfg_.seq_len, "]");
    B_ = B, T_ = T;
    have_targets_ = targets != nullptr;
    loss_share_ = opt.loss_share;
    const int64_t N = B * T, C = cfg_.d_model, H = cfg_.d_ff, V = cfg_.vocab_size;
    const float eps = float(cfg_.norm_eps);
    const nn::AttentionConfig ac = attn_config();

    int32_t* tok = acts_.get(tokens_id_).ptr<int32_t>();
    {
        MOE_PROFILE_SCOPE("embedding");
        std::memcpy(tok, tokens, size_t(N) * sizeof(int32_t));
        if (targets) std::memcpy(acts_.get(targets_id_).ptr<int32_t>(), targets, size_t(N) * 4);
        nn::embedding_forward(a(la_[0].x_in), tok, p(tok_emb_), N, V, C);
    }
    router_loss_ = 0;
    for (size_t l = 0; l < la_.size(); ++l) {
        // What the scopes below leave out: norms, residual adds (and the MoE layer's own
        // unmarked bookkeeping, a few copies).
        MOE_PROFILE_SCOPE("norms_residual");
        const LayerParams& P = lp_[l];
        const LayerActs& A = la_[l];
        float* x = a(A.x_in);
        float* x_mid = a(A.x_mid);
        float* x_out = l + 1 < la_.size() ? a(la_[l + 1].x_in) : a(x_final_);
        kernels::rmsnorm_forward(a(A.attn_norm_out), a(A.attn_rstd), x, p(P.attn_norm), N, C, eps);
        {
            MOE_PROFILE_SCOPE("attention_fwd");
            const nn::AttentionSaved<float> saved{a(A.q), a(A.k), a(A.v), a(A.att), a(A.y)};
            nn::attention_forward(x_mid, saved, a(A.attn_norm_out), p(P.wq), p(P.wk), p(P.wv),
                                  p(P.wo), B, T, ac);
        }
        kernels::add(x_mid, x_mid, x, N * C);
        kernels::rmsnorm_forward(a(A.ffn_norm_out), a(A.ffn_rstd), x_mid, p(P.ffn_norm), N, C, eps);
        if (moe_[l]) {
            sparse::RouterInput<float> extras;
            extras.token_ids = tok;
            extras.labels = opt.domains;
            extras.training = opt.training;
            extras.seed = opt.seed * 1000003ull + l;  // a different noise stream per layer
            extras.first_token = opt.first_token;
            router_loss_ += moe_[l]->forward(x_out, a(A.ffn_norm_out), N, extras);
        } else {
            MOE_PROFILE_SCOPE("dense_ffn_fwd");
            nn::swiglu_mlp_forward(x_out, a(A.h1), a(A.h3), a(A.act), a(A.ffn_norm_out), p(P.w1),
                                   p(P.w3), p(P.w2), N, C, H);
        }
        kernels::add(x_out, x_out, x_mid, N * C);
    }
    {
        MOE_PROFILE_SCOPE("norms_residual");
        kernels::rmsnorm_forward(a(final_norm_out_), a(final_rstd_), a(x_final_), p(final_norm_), N,
                                 C, eps);
    }
    {
        MOE_PROFILE_SCOPE("lm_head_fwd");
        nn::linear_forward(logits_, a(final_norm_out_), p(lm_head_),
                           static_cast<const float*>(nullptr), N, C, V);
    }
    if (!targets) return 0.0;
    MOE_PROFILE_SCOPE("cross_entropy_fwd");
    return loss_share_ *
           nn::cross_entropy_forward(logits_, logits_, acts_.get(targets_id_).ptr<int32_t>(), N, V);
}

void TransformerLM::backward() {
    MOE_CHECK(have_targets_, "TransformerLM::backward: the last forward had no targets");
    const int64_t B = B_, T = T_, N = B * T, C = cfg_.d_model, H = cfg_.d_ff, V = cfg_.vocab_size;
    const nn::AttentionConfig ac = attn_config();
    const int32_t* tok = acts_.get(tokens_id_).ptr<int32_t>();
    float* d_logits = a(d_logits_);
    float* d_stream = a(d_stream_);  // d(loss)/d(residual stream) at the current depth
    float* d_norm = a(d_norm_);
    const size_t nc_bytes = size_t(N * C) * sizeof(float);

    {
        MOE_PROFILE_SCOPE("cross_entropy_bwd");
        std::memset(d_logits, 0, size_t(N * V) * sizeof(float));
        nn::cross_entropy_backward(d_logits, logits_, acts_.get(targets_id_).ptr<int32_t>(), N, V,
                                   float(loss_share_));
    }
    {
        MOE_PROFILE_SCOPE("lm_head_bwd");
        std::memset(d_norm, 0, nc_bytes);
        nn::linear_backward(d_norm, g(lm_head_), static_cast<float*>(nullptr), d_logits,
                            a(final_norm_out_), p(lm_head_), N, C, V);
    }
    {
        MOE_PROFILE_SCOPE("norms_residual");
        std::memset(d_stream, 0, nc_bytes);
        kernels::rmsnorm_backward(d_stream, g(final_norm_), d_norm, a(x_final_), p(final_norm_),
                                  a(final_rstd_), N, C);
    }

    for (size_t l = la_.size(); l-- > 0;) {
        MOE_PROFILE_SCOPE("norms_residual");  // what the scopes below leave out
        const LayerParams& P = lp_[l];
        const LayerActs& A = la_[l];
        // Feed-forward branch: d_stream holds d/d(x_out) and gains the branch's d/d(x_mid).
        std::memset(d_norm, 0, nc_bytes);
        if (moe_[l]) {
            moe_[l]->backward(d_stream, d_norm);  // also the router losses' gradients
        } else {
            MOE_PROFILE_SCOPE("dense_ffn_bwd");
            nn::swiglu_mlp_backward(d_norm, g(P.w1), g(P.w3), g(P.w2), a(scratch_), d_stream,
                                    a(A.ffn_norm_out), a(A.h1), a(A.h3), a(A.act), p(P.w1), p(P.w3),
                                    p(P.w2), N, C, H);
        }
        kernels::rmsnorm_backward(d_stream, g(P.ffn_norm), d_norm, a(A.x_mid), p(P.ffn_norm),
                                  a(A.ffn_rstd), N, C);
        // Attention branch: d_stream now holds d/d(x_mid) and gains d/d(x_in).
        std::memset(d_norm, 0, nc_bytes);
        {
            MOE_PROFILE_SCOPE("attention_bwd");
            const nn::AttentionSaved<float> saved{a(A.q), a(A.k), a(A.v), a(A.att), a(A.y)};
            nn::attention_backward(d_norm, g(P.wq), g(P.wk), g(P.wv), g(P.wo), a(scratch_),
                                   d_stream, saved, a(A.attn_norm_out), p(P.wq), p(P.wk), p(P.wv),
                                   p(P.wo), B, T, ac);
        }
        kernels::rmsnorm_backward(d_stream, g(P.attn_norm), d_norm, a(A.x_in), p(P.attn_norm),
                                  a(A.attn_rstd), N, C);
    }
    MOE_PROFILE_SCOPE("embedding");
    nn::embedding_backward(g(tok_emb_), d_stream, tok, N, V, C);
}

void TransformerLM::start_generation(int64_t max_len) {
    MOE_REQUIRE(max_len > 0, "generation length must be > 0, got ", max_len);
    if (max_len > gen_max_len_) {
        const nn::AttentionConfig ac = attn_config();
        const int64_t C = cfg_.d_model, H = cfg_.d_ff, V = cfg_.vocab_size;
        Arena a;
        for (size_t l = 0; l < lp_.size(); ++l)
            nn::declare_kv_cache(a, "layers." + std::to_string(l) + ".cache", max_len, ac);
        for (const char* name : {"x", "xn", "branch"}) a.add(name, {C});
        for (const char* name : {"h1", "h3", "act"}) a.add(name, {H});
        a.add("scratch", {nn::attention_decode_scratch_size(max_len, ac)});
        a.add("logits", {V});
        a.add("token", {1}, DType::i32);
        a.allocate();
        decode_ = std::move(a);
        caches_.clear();
        for (size_t l = 0; l < lp_.size(); ++l)
            caches_.push_back(nn::kv_cache_in(decode_, "layers." + std::to_string(l) + ".cache"));
        gen_max_len_ = max_len;
    }
    for (auto& c : caches_) c.reset();
    gen_length_ = 0;
}

const float* TransformerLM::decode(int32_t token) {
    MOE_CHECK(!caches_.empty(), "TransformerLM::decode before start_generation");
    MOE_REQUIRE(gen_length_ < gen_max_len_, "generation reached its maximum length of ",
                gen_max_len_, " tokens");
    const int64_t C = cfg_.d_model, H = cfg_.d_ff, V = cfg_.vocab_size;
    const float eps = float(cfg_.norm_eps);
    const nn::AttentionConfig ac = attn_config();
    float* x = decode_.get("x").ptr<float>();
    float* xn = decode_.get("xn").ptr<float>();
    float* branch = decode_.get("branch").ptr<float>();
    float* scratch = decode_.get("scratch").ptr<float>();
    int32_t* tok = decode_.get("token").ptr<int32_t>();
    float rstd;
    tok[0] = token;
    nn::embedding_forward(x, tok, p(tok_emb_), 1, V, C);
    for (size_t l = 0; l < lp_.size(); ++l) {
        const LayerParams& P = lp_[l];
        kernels::rmsnorm_forward(xn, &rstd, x, p(P.attn_norm), 1, C, eps);
        nn::attention_decode_forward(branch, xn, p(P.wq), p(P.wk), p(P.wv), p(P.wo), caches_[l], ac,
                                     scratch);
        kernels::add(x, x, branch, C);
        kernels::rmsnorm_forward(xn, &rstd, x, p(P.ffn_norm), 1, C, eps);
        if (moe_[l]) {
            sparse::RouterInput<float> extras;
            extras.token_ids = tok;
            moe_[l]->forward(branch, xn, 1, extras);
        } else {
            nn::swiglu_mlp_forward(branch, decode_.get("h1").ptr<float>(),
                                   decode_.get("h3").ptr<float>(), decode_.get("act").ptr<float>(),
                                   xn, p(P.w1), p(P.w3), p(P.w2), 1, C, H);
        }
        kernels::add(x, x, branch, C);
    }
    kernels::rmsnorm_forward(xn, &rstd, x, p(final_norm_), 1, C, eps);
    float* logits = decode_.get("logits").ptr<float>();
    nn::linear_forward(logits, xn, p(lm_head_), static_cast<const float*>(nullptr), 1, C, V);
    ++gen_length_;
    return logits;
}

}  // namespace moe::lm
