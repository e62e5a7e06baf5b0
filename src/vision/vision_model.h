// VisionModel: an image classifier, dense or Mixture-of-Experts (vision_config.h describes
// the architecture and its options).
//
//   tokens = stem(images)                 conv stages + projection, or patch embedding + pos
//   [tokens = mean over tokens]           model.tokens = "pooled"
//   for each block:  x = x + attn(LN(x))  (model.attention)
//                    x = x + ffn(LN(x))   dense GELU MLP or an MoE layer (any router)
//   logits = head(LN(mean over tokens of x))      model.head = "mean"
//   logits = head(flatten(LN(x)))                 model.head = "flatten" (every token in place)
//
// Activations are NHWC throughout, so the stem's output is already a [B*T, C] token matrix.
// Parameters, gradients and activations live in arenas sized at construction for max_batch
// images: forward and backward allocate nothing (oneDNN's convolutions set up their
// primitives on the first call with each batch size).
// Parameter names: stem.S.J.conv.weight, stem.proj.weight, patch_embed.weight, pos_emb,
// blocks.L.norm1.weight, blocks.L.attn.wq, blocks.L.mlp.w1, blocks.L.moe.router.weight,
// final_norm.weight, head.weight, head.bias ...
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "moe/moe_block.h"
#include "nn/attention.h"
#include "nn/conv2d.h"
#include "vision/conv_stem.h"
#include "vision/vision_config.h"

namespace moe::vision {

struct VisionForwardOptions {
    const int32_t* domains = nullptr;  // [B] domain of each image (assigned routing), or null
    bool training = false;             // router noise and jitter, routing by domain
    uint64_t seed = 0;                 // router noise and jitter come from this seed
    int64_t first_image = 0;           // global index of image 0 in the batch (data parallel)
    // This process's share of the batch (data parallelism: B_local / B_global): forward
    // returns the mean cross-entropy times it and backward scales the gradient likewise.
    double loss_share = 1.0;
};

// A parameter this process holds rows [first_row, ...) of (expert parallelism).
struct VisionShardedParam {
    std::string name;
    int64_t global_rows = 0;
    int64_t first_row = 0;
};

class VisionModel {
  public:
    // expert_parallel (optional, size > 1): the MoE layers spread their experts over its
    // ranks; every rank must then call forward, backward and after_step together.
    VisionModel(const VisionModelConfig& cfg, int64_t max_batch,
                comm::Comm* expert_parallel = nullptr);

    void init_weights(uint64_t seed);

    // images: [B, H, W, C] normalised pixels (kept by the caller until backward);
    // labels: [B] classes or null (then only probs() is computed and 0 returned). Returns the
    // mean cross-entropy (times opt.loss_share).
    double forward(const float* images, const int32_t* labels, int64_t B,
                   const VisionForwardOptions& opt = {});
    // Accumulates d(loss + router_loss)/d(param) into grads() for the last forward (which
    // needs labels).
    void backward();
    double router_loss() const { return router_loss_; }
    void after_step();

    const float* probs() const { return probs_; }  // [B, n_classes] of the last forward

    // The MoE layer of block l, or null for a dense block.
    sparse::MoeBlock<float>* moe_layer(int64_t l) const { return moe_[size_t(l)].get(); }
    int64_t tokens_per_image() const { return T_; }

    const VisionModelConfig& config() const { return cfg_; }
    Arena& params() { return params_; }
    Arena& grads() { return grads_; }
    const Arena& params() const { return params_; }
    int64_t num_params() const;
    // Multiply-adds x 2 of one image's forward (convolutions, projections, attention,
    // the active experts): the figure a benchmark turns into GFLOP/s (backward: 2x that).
    double forward_flops_per_image() const;
    std::vector<VisionShardedParam> sharded_params() const;
    size_t activation_bytes() const;

  private:
    struct BlockParams {
        int norm1_w = -1, norm1_b = -1, wq = -1, wk = -1, wv = -1, wo = -1;
        int norm2_w = -1, norm2_b = -1, w1 = -1, b1 = -1, w2 = -1, b2 = -1;
    };
    struct BlockActs {
        int x_in, n1_out, n1_mean, n1_rstd, q, k, v, att, y, x_mid, n2_out, n2_mean, n2_rstd, h,
            act;
    };
    float* p(int id) const { return params_.get(id).ptr<float>(); }
    float* g(int id) const { return grads_.get(id).ptr<float>(); }
    float* a(int id) const { return acts_.get(id).ptr<float>(); }
    nn::AttentionConfig attn_config() const;
    bool flatten_head() const { return cfg_.head == "flatten"; }

    VisionModelConfig cfg_;
    int64_t max_batch_, T_, Ts_;  // tokens per image in the blocks, and out of the stem
    Arena params_, grads_, acts_;
    std::unique_ptr<ConvStem> conv_stem_;
    std::unique_ptr<nn::Conv2d> patch_embed_;
    int stem_proj_w_ = -1, stem_proj_b_ = -1, patch_w_ = -1, patch_b_ = -1, pos_emb_ = -1;
    int final_norm_w_, final_norm_b_, head_w_, head_b_;
    std::vector<BlockParams> bp_;
    std::vector<BlockActs> ba_;
    std::vector<std::unique_ptr<sparse::MoeBlock<float>>> moe_;
    // Activations outside the blocks.
    int stem_out_, tokens_, x_final_, pooled_, fn_out_, fn_mean_, fn_rstd_, probs_id_, labels_id_,
        domains_id_, d_stream_, d_norm_, d_stem_, d_pooled_, d_logits_, scratch_;
    float* probs_ = nullptr;
    const float* images_ = nullptr;
    int64_t B_ = 0;
    bool have_labels_ = false;
    double loss_share_ = 1.0, router_loss_ = 0;
};

}  // namespace moe::vision
