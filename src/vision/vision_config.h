// Settings of an image classifier and its training run, read from a JSON config file
// ("task": "vision"). Every key, its default and meaning is listed in docs/vision.md.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/config.h"
#include "moe/moe_config.h"
#include "train/train_options.h"

namespace moe::vision {

// The model: a stem turns an image into tokens, blocks transform the tokens, the mean token
// goes through a norm and a linear class head.
//
//   stem "conv":  per stage: convs_per_stage x (3x3 conv, channel LayerNorm, GELU), then 2x2
//                 max pooling; the last stage's pixels are the tokens, projected to d_model.
//   stem "patch": a patch embedding (a conv with kernel = stride = patch) to d_model, plus a
//                 learned position embedding (a ViT).
//   tokens "pooled": the stem's tokens are averaged to one token per image before the blocks
//                 (the MoE then routes whole images, e.g. a conv stem with an MoE head).
//   head:         LN then linear, on the mean token or on all tokens flattened (model.head).
//   block l:      x += attn(LN(x)) (with attention), x += ffn(LN(x)); ffn is an MoE layer
//                 in blocks with l % moe_every == moe_every - 1 when ffn = "moe" (V-MoE puts
//                 one in every other block: moe_every = 2), else a dense GELU MLP of d_ff.
struct VisionModelConfig {
    int64_t height = 28, width = 28, channels = 1;  // input images
    int64_t n_classes = 10;

    std::string stem = "conv";                   // "conv" or "patch"
    std::vector<int64_t> conv_channels{32, 64};  // conv stem: channels of each stage
    int64_t convs_per_stage = 2;
    int64_t patch = 4;               // patch stem: patch size
    std::string tokens = "spatial";  // "spatial" or "pooled"
    // The class head: "mean" (of the tokens, normalised) or "flatten" (every normalised
    // token in place, [T * d_model] per image: keeps where a feature is, as a CNN's head).
    std::string head = "mean";

    int64_t d_model = 128;
    int64_t n_layers = 2;
    bool attention = false;  // self-attention in every block (bidirectional, no RoPE)
    int64_t n_heads = 4;
    int64_t d_ff = 256;       // dense blocks' GELU MLP hidden size
    std::string ffn = "moe";  // "dense" or "moe"
    int64_t moe_every = 1;    // MoE in blocks l with l % moe_every == moe_every - 1
    double norm_eps = 1e-5;
    double init_std = 0.02;
    sparse::MoeConfig moe;  // with ffn = "moe" (d_model and causal come from the model)

    // Tokens per image after the stem (1 when pooled).
    int64_t stem_tokens() const;
    int64_t tokens_per_image() const { return tokens == "pooled" ? 1 : stem_tokens(); }
    int64_t stem_channels() const;  // feature size of the stem's tokens
    bool is_moe_block(int64_t l) const { return ffn == "moe" && l % moe_every == moe_every - 1; }
    void validate() const;  // errors name the key and value
};

struct VisionDataOptions {
    std::string dataset = "fashion_mnist";  // "fashion_mnist" or "png_folder"
    std::string path;          // fashion_mnist: the IDX folder (default: Debian's); png_folder:
                               // a folder with one subfolder of PNG images per class
    std::string test_path;     // png_folder: the test images (same layout); optional
    int64_t val_count = 5000;  // validation images held out of the training set
    int64_t crop_padding = 2;  // augmentation: random crop after zero padding (0: off)
    bool hflip = true;         // augmentation: random horizontal flip
    // Domain of each image for assigned routing: "class_groups" (Fashion-MNIST: tops,
    // bottoms, footwear, bags), "classes" (one domain per class) or "none".
    std::string domains = "class_groups";
};

struct VisionTrainConfig {
    VisionModelConfig model;
    train::TrainOptions train;
    VisionDataOptions data;
    std::string out_dir = "runs/vision";
};

// Reads every section of `cfg` ("task" must be "vision"), rejecting unknown keys and bad
// values, naming them.
VisionTrainConfig read_vision_train_config(io::Config& cfg);
VisionTrainConfig vision_train_config_from_json(const std::string& json, const std::string& source);
nlohmann::json to_json(const VisionTrainConfig& c);

// Fashion-MNIST's class groups, the domains of assigned routing: tops (T-shirt/top,
// pullover, coat, shirt), bottoms (trouser, dress), footwear (sandal, sneaker, ankle boot),
// bags. fashion_group_of_class[c] for each of the 10 classes.
inline constexpr int32_t kFashionGroupOfClass[10] = {0, 1, 0, 1, 0, 2, 0, 2, 3, 2};
inline constexpr const char* kFashionGroupNames[4] = {"tops", "bottoms", "footwear", "bags"};

}  // namespace moe::vision
