#include "vision/vision_config.h"

#include "core/check.h"

namespace moe::vision {

int64_t VisionModelConfig::stem_tokens() const {
    if (stem == "patch") return (height / patch) * (width / patch);
    int64_t h = height, w = width;
    for (size_t s = 0; s < conv_channels.size(); ++s) h /= 2, w /= 2;
    return h * w;
}

int64_t VisionModelConfig::stem_channels() const {
    return stem == "patch" ? d_model : conv_channels.back();
}

void VisionModelConfig::validate() const {
    MOE_REQUIRE(height > 0 && width > 0 && channels > 0,
                "model.height, model.width and "
                "model.channels must be > 0, got ",
                height, "x", width, "x", channels);
    MOE_REQUIRE(n_classes >= 2, "model.n_classes must be >= 2, got ", n_classes);
    MOE_REQUIRE(stem == "conv" || stem == "patch",
                "model.stem must be \"conv\" or \"patch\", got \"", stem, "\"");
    if (stem == "conv") {
        MOE_REQUIRE(!conv_channels.empty(), "model.conv_channels must list at least one stage");
        for (int64_t c : conv_channels)
            MOE_REQUIRE(c > 0, "model.conv_channels must be > 0, got ", c);
        MOE_REQUIRE(convs_per_stage >= 1, "model.convs_per_stage must be >= 1, got ",
                    convs_per_stage);
        MOE_REQUIRE((height >> conv_channels.size()) > 0 && (width >> conv_channels.size()) > 0,
                    "model.conv_channels: ", conv_channels.size(), " stages halve a ", height, "x",
                    width, " image to nothing");
    } else {
        MOE_REQUIRE(patch > 0 && height % patch == 0 && width % patch == 0, "model.patch (", patch,
                    ") must divide the image size ", height, "x", width);
    }
    MOE_REQUIRE(tokens == "spatial" || tokens == "pooled",
                "model.tokens must be \"spatial\" or \"pooled\", got \"", tokens, "\"");
    MOE_REQUIRE(head == "mean" || head == "flatten",
                "model.head must be \"mean\" or \"flatten\", got \"", head, "\"");
    MOE_REQUIRE(d_model > 0, "model.d_model must be > 0, got ", d_model);
    MOE_REQUIRE(n_layers >= 0, "model.n_layers must be >= 0, got ", n_layers);
    MOE_REQUIRE(d_ff > 0, "model.d_ff must be > 0, got ", d_ff);
    MOE_REQUIRE(norm_eps > 0, "model.norm_eps must be > 0, got ", norm_eps);
    if (attention) {
        MOE_REQUIRE(tokens == "spatial",
                    "model.attention needs model.tokens = \"spatial\" (one pooled token has "
                    "nothing to attend to)");
        MOE_REQUIRE(n_heads > 0 && d_model % n_heads == 0, "model.n_heads (", n_heads,
                    ") must divide model.d_model (", d_model, ")");
    }
    MOE_REQUIRE(ffn == "dense" || ffn == "moe", "model.ffn must be \"dense\" or \"moe\", got \"",
                ffn, "\"");
    MOE_REQUIRE(moe_every >= 1, "model.moe_every must be >= 1, got ", moe_every);
    if (ffn == "moe") {
        MOE_REQUIRE(n_layers >= moe_every, "model.ffn = \"moe\" with model.moe_every = ", moe_every,
                    " needs model.n_layers >= ", moe_every, ", got ", n_layers);
        sparse::MoeConfig m = moe;
        m.d_model = d_model;
        m.causal = false;
        m.validate();
    }
}

VisionTrainConfig read_vision_train_config(io::Config& cfg) {
    const std::string& src = cfg.source();
    const std::string task = cfg.get<std::string>("task", "language");
    MOE_REQUIRE(task == "vision", src, ": task is \"", task, "\", expected \"vision\"");
    VisionTrainConfig c;
    auto& m = c.model;
    m.height = cfg.get<int64_t>("model.height", m.height);
    m.width = cfg.get<int64_t>("model.width", m.width);
    m.channels = cfg.get<int64_t>("model.channels", m.channels);
    m.n_classes = cfg.get<int64_t>("model.n_classes", m.n_classes);
    m.stem = cfg.get<std::string>("model.stem", m.stem);
    m.conv_channels = cfg.get<std::vector<int64_t>>("model.conv_channels", m.conv_channels);
    m.convs_per_stage = cfg.get<int64_t>("model.convs_per_stage", m.convs_per_stage);
    m.patch = cfg.get<int64_t>("model.patch", m.patch);
    m.tokens = cfg.get<std::string>("model.tokens", m.tokens);
    m.head = cfg.get<std::string>("model.head", m.head);
    m.d_model = cfg.get<int64_t>("model.d_model", m.d_model);
    m.n_layers = cfg.get<int64_t>("model.n_layers", m.n_layers);
    m.attention = cfg.get<bool>("model.attention", m.stem == "patch");
    m.n_heads = cfg.get<int64_t>("model.n_heads", m.n_heads);
    m.d_ff = cfg.get<int64_t>("model.d_ff", m.d_ff);
    m.ffn = cfg.get<std::string>("model.ffn", m.ffn);
    m.moe_every = cfg.get<int64_t>("model.moe_every", m.moe_every);
    m.norm_eps = cfg.get<double>("model.norm_eps", m.norm_eps);
    m.init_std = cfg.get<double>("model.init_std", m.init_std);
    m.moe = sparse::moe_config_from(cfg, "moe");

    c.train = train::read_train_options(cfg);

    auto& d = c.data;
    d.dataset = cfg.get<std::string>("data.dataset", d.dataset);
    d.path = cfg.get<std::string>("data.path", d.path);
    d.test_path = cfg.get<std::string>("data.test_path", d.test_path);
    d.val_count = cfg.get<int64_t>("data.val_count", d.val_count);
    d.crop_padding = cfg.get<int64_t>("data.crop_padding", d.crop_padding);
    d.hflip = cfg.get<bool>("data.hflip", d.hflip);
    d.domains = cfg.get<std::string>("data.domains", d.domains);
    c.out_dir = cfg.get<std::string>("out_dir", c.out_dir);
    cfg.finish();

    m.validate();
    train::check_train_options(c.train, src);
    MOE_REQUIRE(d.dataset == "fashion_mnist" || d.dataset == "png_folder", src,
                ": data.dataset must be \"fashion_mnist\" or \"png_folder\", got \"", d.dataset,
                "\"");
    MOE_REQUIRE(d.dataset != "png_folder" || !d.path.empty(), src,
                ": data.dataset = \"png_folder\" needs data.path (a folder with one subfolder "
                "of PNG images per class)");
    MOE_REQUIRE(d.val_count >= 1, src, ": data.val_count must be >= 1, got ", d.val_count);
    MOE_REQUIRE(d.crop_padding >= 0 && d.crop_padding <= 8, src,
                ": data.crop_padding must be in [0, 8], got ", d.crop_padding);
    MOE_REQUIRE(d.domains == "class_groups" || d.domains == "classes" || d.domains == "none", src,
                ": data.domains must be \"class_groups\", \"classes\" or \"none\", got \"",
                d.domains, "\"");
    MOE_REQUIRE(d.domains != "class_groups" || d.dataset == "fashion_mnist", src,
                ": data.domains = \"class_groups\" is Fashion-MNIST's grouping; use \"classes\" "
                "or \"none\" with data.dataset = \"",
                d.dataset, "\"");
    if (m.ffn == "moe" && m.moe.router == "assigned")
        MOE_REQUIRE(d.domains != "none", src,
                    ": moe.router = \"assigned\" needs data.domains (\"class_groups\" or "
                    "\"classes\")");
    MOE_REQUIRE(c.train.reduction_groups == 1, src,
                ": train.reduction_groups must be 1 for vision models (the convolutions sum "
                "their gradients inside oneDNN, not in the canonical groups)");
    MOE_REQUIRE(!c.out_dir.empty(), src, ": out_dir must not be empty");
    return c;
}

nlohmann::json to_json(const VisionTrainConfig& c) {
    const auto& m = c.model;
    const auto& d = c.data;
    return {{"task", "vision"},
            {"model",
             {{"height", m.height},
              {"width", m.width},
              {"channels", m.channels},
              {"n_classes", m.n_classes},
              {"stem", m.stem},
              {"conv_channels", m.conv_channels},
              {"convs_per_stage", m.convs_per_stage},
              {"patch", m.patch},
              {"tokens", m.tokens},
              {"head", m.head},
              {"d_model", m.d_model},
              {"n_layers", m.n_layers},
              {"attention", m.attention},
              {"n_heads", m.n_heads},
              {"d_ff", m.d_ff},
              {"ffn", m.ffn},
              {"moe_every", m.moe_every},
              {"norm_eps", m.norm_eps},
              {"init_std", m.init_std}}},
            {"moe", sparse::moe_config_to_json(m.moe)},
            {"train", train::to_json(c.train)},
            {"data",
             {{"dataset", d.dataset},
              {"path", d.path},
              {"test_path", d.test_path},
              {"val_count", d.val_count},
              {"crop_padding", d.crop_padding},
              {"hflip", d.hflip},
              {"domains", d.domains}}},
            {"out_dir", c.out_dir}};
}

VisionTrainConfig vision_train_config_from_json(const std::string& json,
                                                const std::string& source) {
    io::Config cfg(json, source);
    return read_vision_train_config(cfg);
}

}  // namespace moe::vision
