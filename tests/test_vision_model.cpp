// The vision model and its training end to end: the whole model's gradient against finite
// differences, a tiny classifier on Fashion-MNIST that must clearly beat chance, exact resume
// (with augmentation and router jitter), PNG-folder data, checkpoints that eval and classify
// read back, and config errors that name the key.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "test_support.h"
#include "vision/classifier_eval.h"
#include "vision/png_image.h"
#include "vision/vision_data.h"
#include "vision/vision_trainer.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& what) {
    const fs::path d = fs::temp_directory_path() /
                       ("moe_vision_" + what + "_" + std::to_string(::getpid()) + "_" +
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

// Three classes of 12x12 gray images, 40 each: horizontal bars, vertical bars, a bright
// square at a random place, all with noise; one folder per class.
void write_synthetic_pngs(const fs::path& dir, int per_class, uint64_t seed) {
    const char* names[] = {"bars_h", "bars_v", "square"};
    Rng rng(seed);
    std::vector<uint8_t> img(144);
    for (int c = 0; c < 3; ++c) {
        fs::create_directories(dir / names[c]);
        for (int i = 0; i < per_class; ++i) {
            const int64_t phase = int64_t(rng.below(3)), sy = int64_t(rng.below(8)),
                          sx = int64_t(rng.below(8));
            for (int64_t y = 0; y < 12; ++y)
                for (int64_t x = 0; x < 12; ++x) {
                    bool on = c == 0   ? (y + phase) % 3 == 0
                              : c == 1 ? (x + phase) % 3 == 0
                                       : (y >= sy && y < sy + 4 && x >= sx && x < sx + 4);
                    const double v = (on ? 200 : 30) + 25 * rng.normal();
                    img[size_t(y * 12 + x)] = uint8_t(std::clamp(v, 0.0, 255.0));
                }
            vision::write_png((dir / names[c] / (std::to_string(i) + ".png")).string(), 12, 12, 1,
                              img.data());
        }
    }
}

io::Config png_config(const fs::path& dir, const std::string& extra = "") {
    io::Config c(R"({
      "task": "vision",
      "model": {"height": 12, "width": 12, "channels": 1, "n_classes": 3, "stem": "conv",
                "conv_channels": [4, 8], "convs_per_stage": 1, "d_model": 16, "n_layers": 2,
                "ffn": "moe", "moe_every": 1},
      "moe": {"router": "softmax_topk", "n_experts": 4, "top_k": 2, "d_expert": 16,
              "expert": "gelu", "jitter": 0.1},
      "train": {"steps": 6, "batch_size": 8, "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 2,
                "log_every": 100, "eval_every": 3, "threads": 2},
      "data": {"dataset": "png_folder", "val_count": 20, "crop_padding": 1, "hflip": true,
               "domains": "none"}
    })",
                 "test config");
    c.set("data.path=\"" + (dir / "train").string() + "\"");
    c.set("data.test_path=\"" + (dir / "test").string() + "\"");
    c.set("out_dir=\"" + (dir / "run").string() + "\"");
    if (!extra.empty()) c.set(extra);
    return c;
}

std::vector<double> run_and_record(const vision::VisionTrainConfig& cfg, train::StartMode mode,
                                   int64_t stop_at) {
    std::vector<double> losses;
    train::TrainHooks hooks;
    hooks.after_step = [&](int64_t step, double loss) {
        losses.push_back(loss);
        return step != stop_at;
    };
    vision::train_vision(cfg, mode, hooks);
    return losses;
}

// Every tensor of two checkpoints, bit for bit.
void expect_same_checkpoints(const std::string& a, const std::string& b) {
    const io::SafetensorsFile fa(a), fb(b);
    ASSERT_EQ(fa.names(), fb.names());
    for (const std::string& name : fa.names()) {
        const auto ba = fa.bytes(name), bb = fb.bytes(name);
        ASSERT_EQ(ba.size(), bb.size()) << name;
        EXPECT_EQ(0, std::memcmp(ba.data(), bb.data(), ba.size())) << name;
    }
}

// Resume with augmentation (crops and flips from (seed, step)), router jitter and periodic
// evaluation: stopping at step 3 and resuming ends with the same losses and the same bits
// in every tensor as the uninterrupted run. One case per stem.
class VisionResume : public ::testing::TestWithParam<const char*> {};

TEST_P(VisionResume, ReproducesTheUninterruptedRunExactly) {
    const fs::path dir = temp_dir("resume");
    write_synthetic_pngs(dir / "train", 20, 1);
    write_synthetic_pngs(dir / "test", 5, 2);
    auto c = png_config(dir, GetParam());
    const auto cfg = vision::read_vision_train_config(c);
    const auto full = run_and_record(cfg, train::StartMode::fresh, -1);
    ASSERT_EQ(full.size(), 6u);
    fs::copy_file(dir / "run" / "checkpoint.safetensors", dir / "full.safetensors");
    const auto part1 = run_and_record(cfg, train::StartMode::overwrite, 3);
    const auto part2 = run_and_record(cfg, train::StartMode::resume, -1);
    ASSERT_EQ(part1.size(), 3u);
    ASSERT_EQ(part2.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(part1[i], full[i]) << "step " << i + 1;
        EXPECT_EQ(part2[i], full[i + 3]) << "step " << i + 4;
    }
    expect_same_checkpoints((dir / "full.safetensors").string(),
                            (dir / "run" / "checkpoint.safetensors").string());
    fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Stems, VisionResume,
    ::testing::Values("model.stem=\"conv\"",
                      "model={\"height\": 12, \"width\": 12, \"n_classes\": 3, "
                      "\"stem\": \"patch\", \"patch\": 4, \"d_model\": 16, "
                      "\"n_layers\": 2, \"n_heads\": 2, \"moe_every\": 2}"),
    [](const auto& info) { return std::string(info.index == 0 ? "conv" : "vit"); });

// The loss of the whole model against central differences of float evaluations, on a
// dense-gated MoE (every expert every token: no top-k choice to flip under a nudge) after a
// conv stem, a ViT stem, a conv stem pooled to one token, and a flattened head. h = 1e-3:
// at 1e-2 a nudge moves enough 2x2 max-pooling windows to another maximum (a kink) to put a
// third of the stem's entries 30-50% off. At 1e-3 the float rounding of a loss near 1 (a few
// 1e-7 over ~1e3 terms) leaves the differences good to about 5e-4 (an -O1 sanitizer build
// rounds differently from Release and lands there), so the check takes the 12 largest
// gradient entries of each tensor above 5e-3 and demands 5% + 5e-4: a wrong sign, a missing
// term, a wrong scale or a transposed weight is far outside it.
class VisionGradient : public ::testing::TestWithParam<const char*> {};

TEST_P(VisionGradient, MatchesFiniteDifferences) {
    io::Config c(R"({
      "task": "vision",
      "model": {"height": 8, "width": 8, "channels": 2, "n_classes": 3, "conv_channels": [3],
                "convs_per_stage": 2, "d_model": 8, "n_layers": 2, "n_heads": 2, "d_ff": 12,
                "ffn": "moe", "moe_every": 2},
      "moe": {"router": "dense", "n_experts": 3, "top_k": 3, "d_expert": 6, "expert": "gelu",
              "aux_loss_coef": 0.0}
    })",
                 "gradient test");
    c.set(GetParam());
    const auto cfg = vision::read_vision_train_config(c);
    const int64_t B = 3;
    vision::VisionModel model(cfg.model, B);
    model.init_weights(5);
    // Larger weights than the init so that every path carries a visible gradient.
    Rng rng(9);
    float* w = model.params().f32_data();
    for (size_t i = 0; i < model.params().f32_count(); ++i) w[i] += 0.3f * rng.normal();
    const auto x = test::random_normal_f32(size_t(B * 8 * 8 * 2), 3);
    const std::vector<int32_t> y = {0, 2, 1};

    model.grads().zero();
    model.forward(x.data(), y.data(), B);
    model.backward();
    const float h = 1e-3f;
    int checked = 0;
    for (const auto& e : model.params().entries()) {
        float* p = model.params().get(e.name).ptr<float>();
        const float* g = model.grads().get(e.name).ptr<float>();
        const int64_t n = e.shape.numel();
        std::vector<int64_t> order(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
        std::sort(order.begin(), order.end(),
                  [&](int64_t a, int64_t b) { return std::fabs(g[a]) > std::fabs(g[b]); });
        for (int64_t j = 0; j < std::min<int64_t>(12, n); ++j) {
            const int64_t i = order[size_t(j)];
            if (std::fabs(g[i]) < 5e-3) continue;
            const float keep = p[i];
            p[i] = keep + h;
            const double up = model.forward(x.data(), y.data(), B);
            p[i] = keep - h;
            const double down = model.forward(x.data(), y.data(), B);
            p[i] = keep;
            const double numeric = (up - down) / (2.0 * h);
            EXPECT_NEAR(g[i], numeric, 0.05 * std::fabs(numeric) + 5e-4)
                << e.name << "[" << i << "]";
            ++checked;
        }
    }
    EXPECT_GT(checked, 40);
}

std::string gradient_case_name(const ::testing::TestParamInfo<const char*>& info) {
    static const char* const names[] = {"conv", "patch", "pooled", "flatten"};
    return names[info.index];
}

INSTANTIATE_TEST_SUITE_P(Stems, VisionGradient,
                         ::testing::Values("model.stem=\"conv\"", "model.stem=\"patch\"",
                                           "model.tokens=\"pooled\"", "model.head=\"flatten\""),
                         gradient_case_name);

// A tiny model on real Fashion-MNIST for 250 steps (about 2/3 of an epoch at batch 64)
// reaches far above chance (0.1) on the held-out validation images; then the run directory
// alone evaluates on the test set and classifies a PNG.
TEST(VisionTraining, TinyModelOnFashionMnistBeatsChanceClearly) {
    if (!fs::exists(std::string(vision::kFashionMnistDir) + "/train-images-idx3-ubyte.gz"))
        GTEST_SKIP() << "Fashion-MNIST is not installed (scripts/setup.sh installs it)";
    const fs::path dir = temp_dir("fmnist");
    io::Config c(R"({
      "task": "vision",
      "model": {"stem": "conv", "conv_channels": [8, 16], "convs_per_stage": 1, "d_model": 32,
                "n_layers": 1, "ffn": "moe"},
      "moe": {"router": "softmax_topk", "n_experts": 4, "top_k": 2, "d_expert": 32,
              "expert": "gelu"},
      "train": {"steps": 250, "batch_size": 64, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 20,
                "log_every": 1000, "eval_every": 0, "threads": 2},
      "data": {"val_count": 1000, "crop_padding": 0, "hflip": false}
    })",
                 "tiny fashion config");
    c.set("out_dir=\"" + (dir / "run").string() + "\"");
    const auto cfg = vision::read_vision_train_config(c);
    const train::TrainResult r = vision::train_vision(cfg, train::StartMode::fresh);
    EXPECT_EQ(r.steps_done, 250);
    EXPECT_LT(r.val_loss, 1.0);  // chance: ln 10 = 2.30

    vision::LoadedVision v = vision::load_vision((dir / "run").string(), 100);
    EXPECT_EQ(v.step, 250);
    ASSERT_EQ(v.classes.size(), 10u);
    EXPECT_EQ(v.classes[9], "Ankle boot");
    const vision::ImageSet test = vision::load_test_set(v.cfg);
    std::vector<int64_t> idx(1000);
    for (int64_t i = 0; i < 1000; ++i) idx[size_t(i)] = i;
    vision::EvalOptions eo;
    eo.batch = 100;
    const vision::ClassifierEval e = vision::evaluate_classifier(*v.model, test, idx, v.norm, eo);
    EXPECT_EQ(e.images, 1000);
    EXPECT_GT(e.accuracy, 0.65) << "loss " << e.loss;
    int64_t total = 0, routed = 0;
    for (int64_t n : e.confusion) total += n;
    EXPECT_EQ(total, 1000);
    for (int64_t n : e.class_expert.at(0)) routed += n;
    EXPECT_EQ(routed, 1000 * v.model->tokens_per_image() * 2);  // top-2 of every token
    fs::remove_all(dir);
}

// On the synthetic PNG classes, training reaches high accuracy, and `moe eval`, `moe
// inspect` and `moe classify` work from the run directory alone.
std::pair<int, std::string> run_moe(const std::string& args) {
    const std::string out =
        (fs::temp_directory_path() / ("moe_vision_out_" + std::to_string(::getpid()))).string();
    const int status =
        std::system((test::bin_dir() + "/moe " + args + " >" + out + " 2>&1").c_str());
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    fs::remove(out);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

TEST(VisionCommands, TrainEvalInspectClassifyOnPngFolders) {
    const fs::path dir = temp_dir("cli");
    write_synthetic_pngs(dir / "train", 40, 1);
    write_synthetic_pngs(dir / "test", 10, 2);
    auto c = png_config(dir);
    std::ofstream(dir / "config.json") << c.doc().dump();
    auto [code, out] = run_moe("train " + (dir / "config.json").string() +
                               " --set train.steps=120 --set train.eval_every=0 --set "
                               "model.n_layers=1");
    ASSERT_EQ(code, 0) << out;
    const std::string run = (dir / "run").string();
    std::tie(code, out) = run_moe("eval " + run + " --json");
    ASSERT_EQ(code, 0) << out;
    const auto j = nlohmann::json::parse(out.substr(out.find('{')));
    EXPECT_EQ(j["images"], 30);
    EXPECT_GT(j["accuracy"].get<double>(), 0.8) << out;
    EXPECT_TRUE(fs::exists(dir / "run" / "confusion.svg"));
    EXPECT_TRUE(fs::exists(dir / "run" / "confusion.png"));
    std::tie(code, out) = run_moe("inspect " + run);
    ASSERT_EQ(code, 0) << out;
    EXPECT_NE(out.find("bars_v"), std::string::npos) << out;
    EXPECT_TRUE(fs::exists(dir / "run" / "experts_block0.svg"));
    std::tie(code, out) =
        run_moe("classify " + run + " " + (dir / "test" / "bars_v" / "3.png").string());
    ASSERT_EQ(code, 0) << out;
    EXPECT_NE(out.find("bars_v"), std::string::npos) << out;
    std::tie(code, out) = run_moe("classify " + run + " " + (dir / "missing.png").string());
    EXPECT_EQ(code, 1);
    EXPECT_NE(out.find("missing.png"), std::string::npos) << out;
    fs::remove_all(dir);
}

TEST(VisionConfig, ErrorsNameTheKey) {
    const fs::path dir = temp_dir("config");
    auto bad = [&](const std::string& set, const std::string& needle) {
        EXPECT_TRUE(test::throws_error_with(
            [&] {
                auto c = png_config(dir, set);
                vision::read_vision_train_config(c);
            },
            {needle}))
            << set;
    };
    bad("model.stemm=\"conv\"", "model.stemm");
    bad("model.stem=\"resnet\"", "model.stem");
    bad("model.conv_channels=[4, 0]", "model.conv_channels");
    bad("model.conv_channels=\"wide\"", "model.conv_channels");
    bad("model={\"height\": 12, \"width\": 12, \"n_classes\": 3, \"tokens\": \"pooled\", "
        "\"attention\": true}",
        "model.attention");
    bad("model={\"height\": 12, \"width\": 12, \"n_classes\": 3, \"stem\": \"patch\", "
        "\"patch\": 5}",
        "model.patch");
    bad("moe.router=\"assigned\"", "data.domains");
    bad("data.domains=\"class_groups\"", "class_groups");
    bad("data.crop_padding=20", "data.crop_padding");
    bad("train.reduction_groups=2", "train.reduction_groups");
    bad("task=\"language\"", "vision");
    fs::remove_all(dir);
}

}  // namespace
}  // namespace moe
