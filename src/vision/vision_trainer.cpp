#include "vision/vision_trainer.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/parse_number.h"
#include "core/threads.h"
#include "io/json_text.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "vision/vision_data.h"
#include "vision/vision_trainable.h"

namespace moe::vision {

namespace {

const int kFormatVersion = 1;

std::string describe(const VisionModelConfig& m) {
    std::string s = m.stem == "conv" ? "conv stem" : "ViT (patch " + std::to_string(m.patch) + ")";
    s += ", " + std::to_string(m.n_layers) + " blocks of " + std::to_string(m.d_model);
    if (m.ffn == "moe")
        s += ", MoE every " + std::to_string(m.moe_every) + ": " + std::to_string(m.moe.n_experts) +
             " experts top-" + std::to_string(m.moe.top_k) + " " + m.moe.router;
    else
        s += ", dense";
    return s;
}

}  // namespace

train::TrainResult train_vision(const VisionTrainConfig& cfg, train::StartMode mode,
                                const train::TrainHooks& hooks, comm::Comm* comm) {
    const train::TrainOptions& opt = cfg.train;
    // The images first: a bad file is an error before anything is written to out_dir.
    const VisionData data = load_vision_data(cfg);
    train::Trainer trainer(opt, cfg.out_dir, mode, comm);
    const bool root = trainer.root();
    const int64_t ranks = trainer.ranks();
    if (root)
        std::printf("data: %s, %ld training / %ld validation images of %ldx%ldx%ld, %zu classes\n",
                    data.source.c_str(), long(data.split.train.size()), long(data.split.val.size()),
                    long(data.train.height), long(data.train.width), long(data.train.channels),
                    data.train.class_names.size());
    Augment aug;
    aug.pad = cfg.data.crop_padding;
    aug.flip = cfg.data.hflip;
    const TrainBatches batches(data.train, data.split.train, opt.batch_size, uint64_t(opt.seed),
                               data.norm, aug);

    const int64_t Bl = opt.batch_size / ranks;  // the Trainer refuses a batch that does not divide
    VisionModel model(cfg.model, std::max<int64_t>(1, Bl), ranks > 1 ? &trainer.group() : nullptr);
    model.init_weights(uint64_t(opt.seed));
    VisionTrainable trainable(model, data, batches, cfg.data.domains, opt, trainer.group());
    if (root)
        std::printf(
            "model: %s, %ld parameters, %.1f MiB of activations for batch %ld, %d threads\n",
            describe(cfg.model).c_str(), long(model.num_params()),
            model.activation_bytes() / 1048576.0, long(Bl), num_threads());
    if (root)
        std::printf("training: %ld steps of %ld images = %.1f epochs\n", long(opt.steps),
                    long(opt.batch_size),
                    double(opt.steps * opt.batch_size) / double(data.split.train.size()));
    if (root && ranks > 1)
        std::printf("distributed: %s; each rank runs %ld of the %ld images of a batch\n",
                    trainer.group().describe(), long(Bl), long(opt.batch_size));

    std::map<std::string, std::string> metadata;
    try {
        metadata = {{"format", "moe.cpp/vision"},
                    {"format_version", std::to_string(kFormatVersion)},
                    {"config", to_json(cfg).dump()},
                    {"classes", nlohmann::json(data.train.class_names).dump()},
                    {"normalization",
                     nlohmann::json{{"mean", data.norm.mean}, {"std", data.norm.std}}.dump()}};
    } catch (const nlohmann::json::exception& e) {
        MOE_FAIL(cfg.out_dir,
                 ": the config or the class names cannot be stored in a checkpoint: ", e.what());
    }
    return trainer.run(trainable, metadata, hooks);
}

// A damaged or hostile file's metadata can describe a model of any size over a few KB of
// tensors: before building the model, check the config against the tensor table (stem,
// every block's norm and feed-forward, the head, no block past n_layers). The full load
// checks every tensor again, exactly.
static void check_config_against_tensors(const io::SafetensorsFile& f, const VisionModelConfig& m) {
    const std::string& path = f.path();
    auto expect = [&](const std::string& name, std::initializer_list<int64_t> dims) {
        const Shape want(dims);
        MOE_REQUIRE(f.contains(name), path, ": the config in its metadata describes tensor '", name,
                    "' ", want.str(),
                    ", which the file does not hold (metadata and weights do "
                    "not match)");
        const Shape& got = f.info(name).shape;
        MOE_REQUIRE(got == want, path, ": tensor '", name, "' is ", got.str(),
                    " but the config in its metadata makes it ", want.str());
    };
    const int64_t C = m.d_model;
    if (m.stem == "conv") {
        int64_t in = m.channels;
        for (size_t s = 0; s < m.conv_channels.size(); ++s)
            for (int64_t j = 0; j < m.convs_per_stage; ++j, in = m.conv_channels[s])
                expect("stem." + std::to_string(s) + "." + std::to_string(j) + ".conv.weight",
                       {m.conv_channels[s], in, 3, 3});
        expect("stem.proj.weight", {C, m.stem_channels()});
    } else {
        expect("patch_embed.weight", {C, m.channels, m.patch, m.patch});
    }
    for (int64_t l = 0; l < m.n_layers; ++l) {
        const std::string p = "blocks." + std::to_string(l) + ".";
        expect(p + "norm2.weight", {C});
        if (!m.is_moe_block(l))
            expect(p + "mlp.w1", {m.d_ff, C});
        else if (m.moe.router != "soft")
            expect(p + "moe.experts.w1", {m.moe.n_experts, m.moe.d_expert, C});
    }
    const std::string next = "blocks." + std::to_string(m.n_layers) + ".norm2.weight";
    MOE_REQUIRE(!f.contains(next), path, ": holds '", next, "' but the config in its metadata has ",
                m.n_layers, " blocks");
    expect("head.weight", {m.n_classes, m.head == "flatten" ? m.tokens_per_image() * C : C});
}

bool is_vision_checkpoint(const std::string& path) {
    // Any error (no such file, not a checkpoint) is "no": the caller's own loader then says
    // what is wrong with the file.
    try {
        const std::string file =
            std::filesystem::is_directory(path) ? train::checkpoint_path(path) : path;
        const io::SafetensorsFile f(file);
        auto it = f.metadata().find("format");
        return it != f.metadata().end() && it->second == "moe.cpp/vision";
    } catch (const std::exception&) {
        return false;
    }
}

LoadedVision load_vision(const std::string& path, int64_t max_batch) {
    LoadedVision v;
    v.path = std::filesystem::is_directory(path) ? train::checkpoint_path(path) : path;
    const io::SafetensorsFile f(v.path);
    const std::map<std::string, std::string>& meta = f.metadata();
    auto need = [&](const char* key) -> const std::string& {
        auto it = meta.find(key);
        MOE_REQUIRE(it != meta.end(), v.path, ": not a moe.cpp vision checkpoint (no '", key,
                    "' in its metadata)");
        return it->second;
    };
    MOE_REQUIRE(need("format") == "moe.cpp/vision", v.path, ": format '", excerpt(need("format")),
                "' is not a vision checkpoint");
    v.cfg = vision_train_config_from_json(need("config"), v.path + " (config metadata)");
    v.step = parse_int64(need("step"), v.path + ": metadata 'step'", 0);
    const nlohmann::json classes = io::parse_json(need("classes"), v.path + ": metadata 'classes'");
    MOE_REQUIRE(classes.is_array() && int64_t(classes.size()) == v.cfg.model.n_classes, v.path,
                ": metadata 'classes' must list model.n_classes = ", v.cfg.model.n_classes,
                " names");
    for (const auto& c : classes) {
        MOE_REQUIRE(c.is_string(), v.path, ": metadata 'classes' holds ", io::json_excerpt(c),
                    ", not a name");
        v.classes.push_back(c.get<std::string>());
    }
    const nlohmann::json norm =
        io::parse_json(need("normalization"), v.path + ": metadata 'normalization'");
    auto channel_values = [&](const char* key, bool positive) {
        std::vector<float> out;
        const bool ok = norm.is_object() && norm.contains(key) && norm[key].is_array() &&
                        int64_t(norm[key].size()) == v.cfg.model.channels;
        MOE_REQUIRE(ok, v.path, ": metadata 'normalization' needs '", key, "': a list of ",
                    v.cfg.model.channels, " numbers (one per channel)");
        for (const auto& x : norm[key]) {
            MOE_REQUIRE(x.is_number() && std::isfinite(x.get<double>()) &&
                            (!positive || x.get<double>() > 0),
                        v.path, ": metadata 'normalization' '", key, "' holds ",
                        io::json_excerpt(x),
                        positive ? ", not a positive number" : ", not a number");
            out.push_back(x.get<float>());
        }
        return out;
    };
    v.norm.mean = channel_values("mean", false);
    v.norm.std = channel_values("std", true);
    MOE_REQUIRE(max_batch > 0, "load_vision: batch must be > 0");
    check_config_against_tensors(f, v.cfg.model);
    v.model = std::make_unique<VisionModel>(v.cfg.model, max_batch);
    train::load_checkpoint(v.path, {{"", &v.model->params()}}, {"optim."});
    return v;
}

}  // namespace moe::vision
