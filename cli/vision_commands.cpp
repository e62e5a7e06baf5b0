// The vision subcommands: `moe eval RUN` and `moe inspect RUN` on an image classifier (eval.cpp
// and inspect.cpp hand a vision checkpoint over to these), and `moe classify RUN IMAGE.png...`.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/check.h"
#include "core/threads.h"
#include "io/heatmap.h"
#include "vision/classifier_eval.h"
#include "vision/image_resize.h"
#include "vision/png_folder.h"
#include "vision/png_image.h"
#include "vision/vision_data.h"
#include "vision/vision_trainer.h"

namespace moe::cli {

namespace {

const char* kEvalUsage =
    "usage: moe eval RUN [options]            (RUN: a vision model's run directory or checkpoint)\n"
    "\n"
    "Test accuracy of an image classifier, overall and per class, and its confusion matrix\n"
    "drawn as a heatmap (RUN/confusion.svg and .png). The test images are Fashion-MNIST's\n"
    "t10k files (or the config's data.test_path); --split val uses the validation images held\n"
    "out of the training set instead, split exactly as in training.\n"
    "\n"
    "  --split test|val  which images (default test)\n"
    "  --data PATH       a folder of PNG images, one subfolder per class, instead\n"
    "  --out DIR         where the heatmaps go (default: the run's directory)\n"
    "  --batch N         images per forward (default 250)\n"
    "  --threads N       threads (default: all cores)\n"
    "  --route-by-label  assigned router: route each image by its true domain (oracle gate)\n"
    "  --json            one JSON object instead of the table\n";

const char* kInspectUsage =
    "usage: moe inspect RUN [options]         (RUN: a vision model's run directory or checkpoint)\n"
    "\n"
    "Which expert each class's tokens go to, in every MoE layer: a class-by-expert share\n"
    "matrix (each row sums to 1) printed and drawn as heatmaps (RUN/experts_blockL.svg and\n"
    ".png), each expert's leading classes, and for the assigned router the gate's accuracy.\n"
    "Runs on the validation images (held out of training) unless --split test.\n"
    "\n"
    "  --split val|test  which images (default val)\n"
    "  --out DIR         where the heatmaps go (default: the run's directory)\n"
    "  --batch N         images per forward (default 250)\n"
    "  --threads N       threads (default: all cores)\n";

const char* kClassifyUsage =
    "usage: moe classify RUN IMAGE.png [IMAGE.png ...] [options]\n"
    "\n"
    "Prints the top classes of each image with their probabilities. Images of any size and\n"
    "colour type are converted to the model's channels and resized (bilinear) to its input\n"
    "size, then normalised as in training. Fashion-MNIST shows light garments on black:\n"
    "a photo of a dark garment on a white background needs --invert.\n"
    "\n"
    "  --top N           classes to print per image (default 3)\n"
    "  --invert          invert the pixels (255 - value) before classifying\n"
    "  --json            one JSON object per image\n";

// The images a command runs on: the test set, the validation split, or a PNG folder.
struct Images {
    vision::ImageSet set;
    std::vector<int64_t> indices;
    std::string name;
};

Images pick_images(const vision::LoadedVision& v, const std::string& split,
                   const std::string& data) {
    Images im;
    if (!data.empty()) {
        im.set = vision::read_png_folder(data, v.cfg.model.height, v.cfg.model.width,
                                         v.cfg.model.channels);
        MOE_REQUIRE(im.set.class_names == v.classes, data, ": its class folders (",
                    nlohmann::json(im.set.class_names).dump(), ") are not the model's classes (",
                    nlohmann::json(v.classes).dump(), ")");
        im.name = data;
    } else if (split == "test") {
        im.set = vision::load_test_set(v.cfg);
        im.name = "test set";
    } else if (split == "val") {
        vision::VisionData d = vision::load_vision_data(v.cfg);
        im.set = std::move(d.train);
        im.indices = d.split.val;
        im.name = "validation images";
    } else {
        throw UsageError("--split must be test or val, got '" + split + "'");
    }
    if (im.indices.empty()) {
        im.indices.resize(size_t(im.set.count));
        std::iota(im.indices.begin(), im.indices.end(), int64_t(0));
    }
    return im;
}

std::string out_dir_of(const Args& a, const vision::LoadedVision& v) {
    const std::string out = a.get("--out", std::filesystem::path(v.path).parent_path().string());
    std::filesystem::create_directories(out.empty() ? "." : out);
    return out.empty() ? "." : out;
}

}  // namespace

bool names_vision_run(int argc, char** argv) {
    const std::string run = first_run_argument(argc, argv);
    return !run.empty() && vision::is_vision_checkpoint(run);
}

int run_vision_eval(int argc, char** argv) {
    const Args a = parse_args(argc, argv, {"--split", "--data", "--out", "--batch", "--threads"},
                              {"--json", "--route-by-label"});
    if (a.help) return std::fputs(kEvalUsage, stdout), 0;
    if (a.positional.size() != 1) throw UsageError("expected one RUN");
    set_num_threads(a.get_int("--threads", 0, 0));
    const int64_t batch = a.get_int("--batch", 250, 1, 1 << 16);
    vision::LoadedVision v = vision::load_vision(a.positional[0], batch);
    const Images im = pick_images(v, a.get("--split", "test"), a.get("--data", ""));
    vision::EvalOptions eo;
    eo.batch = batch;
    eo.domains = v.cfg.data.domains;
    eo.route_by_label = a.flags.count("--route-by-label") > 0;
    const vision::ClassifierEval r =
        vision::evaluate_classifier(*v.model, im.set, im.indices, v.norm, eo);
    const int64_t K = r.n_classes;

    // The confusion matrix, each row as shares of that class's images.
    io::Heatmap h;
    h.title = "confusion matrix, " + im.name + " (row: true class, column: predicted)";
    h.row_labels = v.classes;
    h.col_labels = v.classes;
    h.value_label = "share of the class's images";
    for (int64_t k = 0; k < K; ++k) {
        int64_t total = 0;
        for (int64_t j = 0; j < K; ++j) total += r.confusion[size_t(k * K + j)];
        for (int64_t j = 0; j < K; ++j)
            h.values.push_back(total ? double(r.confusion[size_t(k * K + j)]) / double(total)
                                     : std::nan(""));
    }
    const std::string out = out_dir_of(a, v);
    const std::string svg = out + "/confusion.svg", png = out + "/confusion.png";
    io::write_heatmap_svg(h, svg);
    io::write_heatmap_png(h, png);

    if (a.flags.count("--json")) {
        nlohmann::json j = {{"checkpoint", v.path},     {"step", v.step}, {"images", r.images},
                            {"split", im.name},         {"loss", r.loss}, {"accuracy", r.accuracy},
                            {"confusion", r.confusion}, {"heatmap", svg}};
        if (r.gate_accuracy >= 0) j["gate_accuracy"] = r.gate_accuracy;
        for (int64_t k = 0; k < K; ++k) {
            const double acc = r.class_accuracy(k);
            j["classes"].push_back(
                {{"class", v.classes[size_t(k)]},
                 {"accuracy", std::isnan(acc) ? nlohmann::json() : nlohmann::json(acc)}});
        }
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    std::printf("%s (step %ld) on the %s (%ld images)\n\n", v.path.c_str(), long(v.step),
                im.name.c_str(), long(r.images));
    std::printf("%-16s %8s %9s\n", "class", "images", "accuracy");
    for (int64_t k = 0; k < K; ++k) {
        int64_t total = 0;
        for (int64_t j = 0; j < K; ++j) total += r.confusion[size_t(k * K + j)];
        std::printf("%-16s %8ld %9.4f\n", v.classes[size_t(k)].c_str(), long(total),
                    r.class_accuracy(k));
    }
    std::printf("%-16s %8ld %9.4f   loss %.4f\n", "all", long(r.images), r.accuracy, r.loss);
    if (r.gate_accuracy >= 0)
        std::printf("gate accuracy (assigned router): %.4f\n", r.gate_accuracy);
    std::printf("\nconfusion matrix: %s, %s\n", svg.c_str(), png.c_str());
    return 0;
}

int run_vision_inspect(int argc, char** argv) {
    const Args a = parse_args(argc, argv, {"--split", "--out", "--batch", "--threads"}, {});
    if (a.help) return std::fputs(kInspectUsage, stdout), 0;
    if (a.positional.size() != 1) throw UsageError("expected one RUN");
    set_num_threads(a.get_int("--threads", 0, 0));
    const int64_t batch = a.get_int("--batch", 250, 1, 1 << 16);
    vision::LoadedVision v = vision::load_vision(a.positional[0], batch);
    const auto& m = v.cfg.model;
    MOE_REQUIRE(m.ffn == "moe", v.path,
                ": a dense model (model.ffn = \"dense\") has no routing to inspect");
    const Images im = pick_images(v, a.get("--split", "val"), "");
    vision::EvalOptions eo;
    eo.batch = batch;
    eo.domains = v.cfg.data.domains;
    const vision::ClassifierEval r =
        vision::evaluate_classifier(*v.model, im.set, im.indices, v.norm, eo);
    const int64_t K = m.n_classes, E = m.moe.n_experts;
    std::printf(
        "%s (step %ld): %ld experts, top-%ld, router %s, %zu MoE layers, on the %s "
        "(%ld images, accuracy %.4f)\n",
        v.path.c_str(), long(v.step), long(E), long(m.moe.top_k), m.moe.router.c_str(),
        r.moe_blocks.size(), im.name.c_str(), long(r.images), r.accuracy);
    if (r.gate_accuracy >= 0)
        std::printf("gate accuracy (share of tokens whose %s the gate predicts): %.4f\n",
                    v.cfg.data.domains == "classes" ? "class" : "class group", r.gate_accuracy);
    const std::string out = out_dir_of(a, v);
    for (size_t i = 0; i < r.moe_blocks.size(); ++i) {
        const std::vector<int64_t>& ce = r.class_expert[i];
        const int64_t total = std::accumulate(ce.begin(), ce.end(), int64_t(0));
        std::printf("\n== block %ld\n", long(r.moe_blocks[i]));
        if (total == 0) {
            std::printf(
                "(Soft MoE: every token reaches every expert through the slots; there is "
                "no per-token route to count)\n");
            continue;
        }
        io::Heatmap h;
        h.title = "block " + std::to_string(r.moe_blocks[i]) + ": where each class's tokens go";
        h.row_labels = v.classes;
        for (int64_t e = 0; e < E; ++e) {
            std::string label = "e";  // not "e" + to_string: GCC 12's false -Wrestrict
            label += std::to_string(e);
            h.col_labels.push_back(label);
        }
        h.value_label = "share of the class's routed tokens";
        for (int64_t k = 0; k < K; ++k) {
            int64_t row = 0;
            for (int64_t e = 0; e < E; ++e) row += ce[size_t(k * E + e)];
            for (int64_t e = 0; e < E; ++e)
                h.values.push_back(row ? double(ce[size_t(k * E + e)]) / double(row)
                                       : std::nan(""));
        }
        std::fputs(io::format_table(h, 3).c_str(), stdout);
        const std::string base = out + "/experts_block" + std::to_string(r.moe_blocks[i]);
        io::write_heatmap_svg(h, base + ".svg");
        io::write_heatmap_png(h, base + ".png");
        // What each expert specialised in: the classes that make up most of its tokens.
        std::printf("experts' leading classes (share of the expert's tokens):\n");
        for (int64_t e = 0; e < E; ++e) {
            int64_t col = 0;
            for (int64_t k = 0; k < K; ++k) col += ce[size_t(k * E + e)];
            std::vector<int64_t> order(static_cast<size_t>(K));
            std::iota(order.begin(), order.end(), int64_t(0));
            std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
                return ce[size_t(x * E + e)] > ce[size_t(y * E + e)];
            });
            std::printf("  e%-3ld %5.1f%% of tokens:", long(e),
                        100.0 * double(col) / double(total));
            for (int64_t j = 0; j < std::min<int64_t>(3, K) && col > 0; ++j) {
                const int64_t k = order[size_t(j)];
                std::printf(" %s %.0f%%%s", v.classes[size_t(k)].c_str(),
                            100.0 * double(ce[size_t(k * E + e)]) / double(col), j < 2 ? "," : "");
            }
            std::printf("\n");
        }
        std::printf("heatmap: %s.svg, %s.png\n", base.c_str(), base.c_str());
    }
    return 0;
}

int run_classify(int argc, char** argv) {
    const Args a = parse_args(argc, argv, {"--top", "--threads"}, {"--invert", "--json"});
    if (a.help) return std::fputs(kClassifyUsage, stdout), 0;
    if (a.positional.size() < 2) throw UsageError("expected RUN and at least one IMAGE.png");
    set_num_threads(a.get_int("--threads", 0, 0));
    vision::LoadedVision v = vision::load_vision(a.positional[0], 1);
    const auto& m = v.cfg.model;
    const int64_t top = std::min(a.get_int("--top", 3, 1), m.n_classes);
    const bool invert = a.flags.count("--invert") > 0, json = a.flags.count("--json") > 0;
    std::vector<uint8_t> resized(size_t(m.height * m.width * m.channels));
    std::vector<float> x(resized.size());
    for (size_t i = 1; i < a.positional.size(); ++i) {
        const std::string& path = a.positional[i];
        const vision::Image img = vision::read_png(path, m.channels);
        vision::resize_bilinear(img.pixels.data(), img.height, img.width, m.channels,
                                resized.data(), m.height, m.width);
        if (invert)
            for (uint8_t& p : resized) p = uint8_t(255 - p);
        vision::augment_image(resized.data(), m.height, m.width, m.channels, v.norm, 0, 0, 0, false,
                              x.data());
        v.model->forward(x.data(), nullptr, 1);
        const float* probs = v.model->probs();
        std::vector<int64_t> order(static_cast<size_t>(m.n_classes));
        std::iota(order.begin(), order.end(), int64_t(0));
        std::partial_sort(order.begin(), order.begin() + top, order.end(),
                          [&](int64_t p, int64_t q) { return probs[p] > probs[q]; });
        if (json) {
            nlohmann::json j = {{"image", path}};
            for (int64_t t = 0; t < top; ++t)
                j["top"].push_back({{"class", v.classes[size_t(order[size_t(t)])]},
                                    {"probability", probs[order[size_t(t)]]}});
            std::printf("%s\n", j.dump().c_str());
            continue;
        }
        std::printf("%s (%ldx%ld):", path.c_str(), long(img.width), long(img.height));
        for (int64_t t = 0; t < top; ++t)
            std::printf("%s %s %.3f", t ? "," : "", v.classes[size_t(order[size_t(t)])].c_str(),
                        probs[order[size_t(t)]]);
        std::printf("\n");
    }
    return 0;
}

}  // namespace moe::cli
