// ConvStem: the convolutional stem of a vision model, images in, tokens out.
//
//   for each stage s (channels c_s):
//       convs_per_stage x  [ 3x3 conv (padding 1, bias) -> LayerNorm over channels -> GELU ]
//       2x2 max pooling (stride 2)
//
// Activations are NHWC (channels last), so the last stage's output [B, h, w, c] is directly
// B*h*w tokens of c features. LayerNorm over the channels of each pixel (as ConvNeXt does)
// instead of BatchNorm: it needs no running statistics and no train/eval switch. The norm and
// the GELU run as one fused kernel (kernels/layernorm_gelu.h), which saves GELU's slope for
// backward instead of the normalised values. Parameter names:
// stem.S.J.conv.weight [c_out, c_in, 3, 3] (PyTorch's layout), stem.S.J.conv.bias,
// stem.S.J.norm.weight, stem.S.J.norm.bias.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "nn/conv2d.h"
#include "nn/pool2d.h"

namespace moe::vision {

class ConvStem {
  public:
    // channels: input channels of the images, then one entry per stage.
    ConvStem(int64_t height, int64_t width, int64_t in_channels,
             const std::vector<int64_t>& stage_channels, int64_t convs_per_stage, double norm_eps,
             int64_t max_batch);

    void declare(Arena& params, const std::string& prefix);
    void bind(Arena& params, Arena& grads);
    // He-style init for the convs (they feed GELUs): N(0, 2 / fan_in); norm gains 1, biases 0.
    void init_weights(uint64_t seed);

    // out: [B, out_height, out_width, out_channels]; images: [B, height, width, in_channels]
    // (kept by the caller until backward).
    void forward(float* out, const float* images, int64_t B);
    // d_out: [B, out_h, out_w, out_c] (overwritten: used as scratch). Parameter gradients
    // accumulated; no input gradient (images need none).
    void backward(float* d_out, int64_t B);

    int64_t out_height() const { return out_h_; }
    int64_t out_width() const { return out_w_; }
    int64_t out_channels() const { return out_c_; }
    size_t activation_bytes() const { return acts_.bytes(); }

  private:
    struct ConvUnit {
        nn::Conv2dShape shape;
        std::unique_ptr<nn::Conv2d> conv;
        int weight = -1, bias = -1, norm_w = -1, norm_b = -1;              // parameters
        int conv_out = -1, mean = -1, rstd = -1, act_grad = -1, act = -1;  // activations
        int64_t pixels_per_image = 0;                                      // h * w
    };
    struct Stage {
        std::vector<ConvUnit> units;
        std::unique_ptr<nn::MaxPool2d> pool;
        int pooled = -1;
        int workspace = -1;  // where forward records each window's maximum for backward
    };
    float* a(int id) const { return acts_.get(id).ptr<float>(); }

    double eps_;
    int64_t max_batch_, out_h_ = 0, out_w_ = 0, out_c_ = 0;
    std::vector<Stage> stages_;
    Arena* params_ = nullptr;
    Arena* grads_ = nullptr;
    Arena acts_;
    int d_a_ = -1, d_b_ = -1;  // gradient ping-pong buffers, the largest activation each
    const float* images_ = nullptr;
};

}  // namespace moe::vision
