// TransformerLM: a decoder-only transformer language model, dense or Mixture-of-Experts.
//
//   x = tok_emb[tokens]
//   for each layer:  x = x + attn(rmsnorm(x)),  x = x + ffn(rmsnorm(x))
//   logits = rmsnorm(x) @ lm_head^T          (lm_head = tok_emb when tie_embeddings)
//
// ffn is a dense SwiGLU MLP (ffn = "dense", the baseline) or an MoE layer with any router
// (ffn = "moe"; the first dense_layers layers may stay dense). The MoE layers' router
// losses (balancing, z-loss, assignment) are added to the training objective: forward
// returns the cross-entropy and router_loss() the rest; backward includes both.
//
// Parameters, gradients and activations live in arenas sized once at construction for
// max_batch sequences of seq_len tokens: forward and backward allocate nothing.
// Parameter names follow the module path: tok_emb, layers.3.attn.wq, layers.3.ffn.w1,
// final_norm, lm_head, ...
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "moe/moe_block.h"
#include "nn/attention.h"
#include "nn/kv_cache.h"

namespace moe::lm {

struct LmConfig {
    int64_t vocab_size = 256;
    int64_t d_model = 128;
    int64_t n_layers = 2;
    int64_t n_heads = 4;
    int64_t d_ff = 384;  // SwiGLU hidden size
    int64_t seq_len = 128;
    bool tie_embeddings = false;
    double norm_eps = 1e-5;
    double rope_theta = 10000.0;
    double init_std = 0.02;

    std::string ffn = "dense";  // "dense" or "moe"
    int64_t dense_layers = 0;   // with ffn = "moe": the first dense_layers layers stay dense
    sparse::MoeConfig moe;      // with ffn = "moe" (d_model and causal come from the model)

    bool is_moe_layer(int64_t layer) const { return ffn == "moe" && layer >= dense_layers; }
    void validate() const;  // errors name the field and value
};

// What a forward needs beyond tokens: the MoE routers' inputs.
struct ForwardOptions {
    const int32_t* domains = nullptr;  // [B, T] domain label of each token (assigned router)
    bool training = false;             // router noise and jitter, routing by label
    uint64_t seed = 0;                 // router noise and jitter come from this seed
    // Global index of this forward's first token (row b, position t is token b*T + t) in the
    // whole batch: a rank holding rows [r*Bl, (r+1)*Bl) passes r*Bl*T, so the router noise
    // and jitter its tokens get are those of one process running the whole batch.
    int64_t first_token = 0;
    // This process's share of the batch's targets (data parallelism: local / global target
    // count). forward returns the mean cross-entropy times it and backward scales the
    // gradient likewise, so the ranks' losses and gradients add up to the whole batch's.
    double loss_share = 1.0;
};

// A parameter this process holds a slice of (expert parallelism): rows
// [first_row, first_row + its rows) of a tensor with global_rows rows.
struct ShardedParam {
    std::string name;
    int64_t global_rows = 0;
    int64_t first_row = 0;
};

class TransformerLM {
  public:
    // expert_parallel (optional, size > 1): the MoE layers spread their experts over its
    // ranks (MoeLayer::set_expert_parallel); every rank must then call forward, backward
    // and after_step together. Parameters other than experts are replicated.
    TransformerLM(const LmConfig& cfg, int64_t max_batch, comm::Comm* expert_parallel = nullptr);

    // Normal(0, init_std) matrices, ones for norm gains; the two projections that write
    // into the residual stream (attn.wo, ffn.w2) get std / sqrt(2 * n_layers), so the
    // stream's variance does not grow with depth (GPT-2's scheme).
    void init_weights(uint64_t seed);

    // tokens, targets: [B, T] with B <= max_batch, T <= seq_len. Returns the mean
    // cross-entropy over targets != -1. With targets == nullptr, computes logits only
    // (read them with logits()) and returns 0.
    double forward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                   const ForwardOptions& opt = {});
    // Accumulates d(loss + router_loss)/d(param) into grads() for the last forward (which
    // needs targets).
    void backward();
    // Sum of the MoE layers' weighted router losses in the last forward (0 if dense).
    double router_loss() const { return router_loss_; }
    // After each optimizer step: the MoE routers' non-gradient updates (selection bias).
    void after_step();

    // Generation, one sequence at a time, with a KV cache per layer: each new token costs
    // time linear in the context. start_generation(max_len) empties the caches (setting them
    // up on the first call, or when max_len grows); decode(token) feeds the next token and
    // returns the logits [vocab] for the token after it. Errors once max_len is reached.
    void start_generation(int64_t max_len);
    const float* decode(int32_t token);
    int64_t generated_length() const { return gen_length_; }

    // The MoE layer of `layer`, or null for a dense layer.
    sparse::MoeBlock<float>* moe_layer(int64_t layer) const { return moe_[size_t(layer)].get(); }

    // [B, T, vocab] logits of the last forward without targets.
    const float* logits() const { return logits_; }

    const LmConfig& config() const { return cfg_; }
    Arena& params() { return params_; }
    Arena& grads() { return grads_; }
    const Arena& params() const { return params_; }
    int64_t num_params() const;  // parameters held by this process
    // The expert tensors of the MoE layers and the rows this process holds (all of them
    // without expert parallelism); the rest of params() is replicated on every rank.
    std::vector<ShardedParam> sharded_params() const;
    size_t activation_bytes() const;  // the model's arena plus its MoE layers'

  private:
    struct LayerParams {
        int attn_norm, wq, wk, wv, wo, ffn_norm, w1, w3, w2;
    };
    struct LayerActs {
        int x_in, attn_norm_out, attn_rstd, q, k, v, att, y, x_mid, ffn_norm_out, ffn_rstd, h1, h3,
            act;
    };
    float* p(int id) const { return params_.get(id).ptr<float>(); }
    float* g(int id) const { return grads_.get(id).ptr<float>(); }
    float* a(int id) const { return acts_.get(id).ptr<float>(); }
    nn::AttentionConfig attn_config() const;

    LmConfig cfg_;
    int64_t max_batch_;
    Arena params_, grads_, acts_;
    int tok_emb_, final_norm_, lm_head_;
    std::vector<LayerParams> lp_;
    std::vector<LayerActs> la_;
    std::vector<std::unique_ptr<sparse::MoeBlock<float>>> moe_;  // null for dense layers
    double router_loss_ = 0;

    // Generation state (decode_ arena: KV caches and one token's buffers).
    Arena decode_;
    std::vector<nn::KvCache<float>> caches_;
    int64_t gen_max_len_ = 0, gen_length_ = 0;
    int x_final_, final_norm_out_, final_rstd_, logits_id_, d_logits_, d_stream_, d_norm_, scratch_,
        tokens_id_, targets_id_;
    float* logits_ = nullptr;
    int64_t B_ = 0, T_ = 0;
    bool have_targets_ = false;
    double loss_share_ = 1.0;
};

}  // namespace moe::lm
