// The training loop end to end on a tiny model: exact resume, checkpoints, config errors,
// and the `moe` command's exit codes and messages.
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "io/safetensors.h"
#include "lm/lm_trainer.h"
#include "test_support.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

// A fresh directory with a small two-domain corpus in fortune format.
struct TempRun {
    fs::path dir;
    TempRun() {
        dir = fs::temp_directory_path() /
              ("moe_train_test_" + std::to_string(::getpid()) + "_" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir);
        fs::create_directories(dir / "corpus");
        const char* words[] = {"alpha", "beta", "gamma", "delta", "router", "expert", "token"};
        for (int d = 0; d < 2; ++d) {
            std::ofstream f(dir / "corpus" / (d ? "science" : "poems"));
            Rng rng{uint64_t(d)};
            for (int rec = 0; rec < 60; ++rec) {
                for (int w = 0; w < 12; ++w) f << words[rng.below(7)] << (w % 6 == 5 ? "\n" : " ");
                f << "%\n";
            }
        }
    }
    ~TempRun() { fs::remove_all(dir); }

    io::Config config(const std::string& extra = "") const {
        io::Config c(R"({
          "model": {"vocab_size": 256, "d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32,
                    "seq_len": 16},
          "train": {"steps": 6, "batch_size": 2, "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 2,
                    "log_every": 100, "eval_every": 0, "eval_windows": 2, "threads": 2}
        })",
                     "test config");
        c.set("data.path=\"" + (dir / "corpus").string() + "\"");
        c.set("out_dir=\"" + (dir / "run").string() + "\"");
        if (!extra.empty()) c.set(extra);
        return c;
    }
};

std::vector<double> run_and_record(const lm::LmTrainConfig& cfg, train::StartMode mode,
                                   int64_t stop_at, train::TrainResult* result = nullptr) {
    std::vector<double> losses;
    train::TrainHooks hooks;
    hooks.after_step = [&](int64_t step, double loss) {
        losses.push_back(loss);
        return step != stop_at;
    };
    const auto r = lm::train_lm(cfg, mode, hooks);
    if (result) *result = r;
    return losses;
}

TEST(TrainLm, ResumeReproducesTheUninterruptedRunExactly) {
    TempRun run;
    auto c = run.config();
    const auto cfg = lm::read_lm_train_config(c);
    const auto full = run_and_record(cfg, train::StartMode::fresh, -1);
    ASSERT_EQ(full.size(), 6u);

    train::TrainResult first;
    const auto part1 = run_and_record(cfg, train::StartMode::overwrite, 3, &first);
    EXPECT_TRUE(first.interrupted);
    EXPECT_EQ(first.steps_done, 3);
    const auto part2 = run_and_record(cfg, train::StartMode::resume, -1);
    ASSERT_EQ(part1.size(), 3u);
    ASSERT_EQ(part2.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(part1[i], full[i]) << "step " << i + 1;
        EXPECT_EQ(part2[i], full[i + 3]) << "step " << i + 4;  // bit-identical, not just close
    }
}

// The same exactness for MoE models, one case per router with state or randomness of its
// own: softmax_topk draws router jitter from the step's seed, sigmoid_bias carries a
// selection bias that after_step() changes outside the optimizer, noisy_topk draws noise
// from the step's seed, and assigned routes by the domain labels (the corpus's two files).
struct MoeResumeCase {
    const char* name;
    std::vector<const char*> keys;  // extra config, as Config::set takes it
};

class TrainLmMoeResume : public ::testing::TestWithParam<MoeResumeCase> {};

TEST_P(TrainLmMoeResume, ReproducesTheUninterruptedRunExactly) {
    TempRun run;
    auto c = run.config();
    // Evaluation every 2 steps: it routes too (overwriting each router's plan), and must
    // leave no trace in the training run.
    for (const char* kv : {"model.ffn=\"moe\"", "moe.n_experts=4", "moe.top_k=2", "moe.d_expert=16",
                           "train.eval_every=2"})
        c.set(kv);
    for (const char* kv : GetParam().keys) c.set(kv);
    const auto cfg = lm::read_lm_train_config(c);
    const auto full = run_and_record(cfg, train::StartMode::fresh, -1);
    ASSERT_EQ(full.size(), 6u);
    const fs::path full_ckpt = run.dir / "full.safetensors";
    fs::copy_file(train::checkpoint_path(cfg.out_dir), full_ckpt);

    const auto part1 = run_and_record(cfg, train::StartMode::overwrite, 3);
    const auto part2 = run_and_record(cfg, train::StartMode::resume, -1);
    ASSERT_EQ(part1.size(), 3u);
    ASSERT_EQ(part2.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(part1[i], full[i]) << "step " << i + 1;
        EXPECT_EQ(part2[i], full[i + 3]) << "step " << i + 4;
    }
    // Every tensor of the final checkpoint (weights, optimizer moments, the selection bias)
    // is bit-identical too: equal losses could hide state that only later steps would read.
    io::SafetensorsFile got(train::checkpoint_path(cfg.out_dir)), want(full_ckpt.string());
    ASSERT_EQ(got.names(), want.names());
    for (const auto& name : want.names()) {
        const auto a = got.bytes(name), b = want.bytes(name);
        EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << name;
    }
    // sigmoid_bias: the bias has moved from its initial 0, so its restoring was tested.
    const std::string bias = "layers.0.moe.router.selection_bias";
    if (want.contains(bias)) {
        const auto v = want.read_f32(bias);
        EXPECT_TRUE(std::any_of(v.begin(), v.end(), [](float x) { return x != 0; }));
    }
}

INSTANTIATE_TEST_SUITE_P(
    Routers, TrainLmMoeResume,
    ::testing::Values(
        MoeResumeCase{"softmax_topk_jitter", {"moe.jitter=0.1"}},
        // A large bias step, so that the bias matters to the routing within six steps.
        MoeResumeCase{"sigmoid_bias", {"moe.router=\"sigmoid_bias\"", "moe.bias_update_rate=0.05"}},
        MoeResumeCase{"noisy_topk", {"moe.router=\"noisy_topk\"", "moe.load_coef=0.01"}},
        MoeResumeCase{"assigned",
                      {"moe.router=\"assigned\"", "moe.domain_experts=[[0, 1], [2, 3]]"}}),
    [](const ::testing::TestParamInfo<MoeResumeCase>& info) { return info.param.name; });

TEST(TrainLm, LossFallsOnRepetitiveText) {
    TempRun run;
    auto c = run.config("train.steps=40");
    const auto losses = run_and_record(lm::read_lm_train_config(c), train::StartMode::fresh, -1);
    ASSERT_EQ(losses.size(), 40u);
    EXPECT_LT(losses.back(), losses.front() - 1.0) << losses.front() << " -> " << losses.back();
}

TEST(TrainLm, CheckpointHoldsNamedTensorsAndConfig) {
    TempRun run;
    auto c = run.config("train.steps=2");
    const auto cfg = lm::read_lm_train_config(c);
    lm::train_lm(cfg, train::StartMode::fresh);
    io::SafetensorsFile f(train::checkpoint_path(cfg.out_dir));
    EXPECT_TRUE(f.contains("layers.0.attn.wq"));
    EXPECT_TRUE(f.contains("optim.m.layers.0.ffn.w1"));
    EXPECT_EQ(f.info("tok_emb").shape, (Shape{256, 16}));
    EXPECT_EQ(f.metadata("step"), "2");
    EXPECT_NE(f.metadata("config").find("\"d_model\":16"), std::string::npos);
    // No temporary file is left beside it.
    for (const auto& e : fs::directory_iterator(cfg.out_dir))
        EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

void expect_error_mentions(const std::function<void()>& f, const std::string& needle) {
    EXPECT_TRUE(test::throws_error_with(f, {needle}));
}

TEST(TrainLm, ConfigErrorsNameTheKey) {
    TempRun run;
    expect_error_mentions(
        [&] {
            auto c = run.config("train.stepz=3");
            lm::read_lm_train_config(c);
        },
        "train.stepz");
    expect_error_mentions(
        [&] {
            auto c = run.config("train.steps=ten");
            lm::read_lm_train_config(c);
        },
        "train.steps");
    expect_error_mentions(
        [&] {
            auto c = run.config("train.lr=-1");
            lm::read_lm_train_config(c);
        },
        "train.lr");
    expect_error_mentions(
        [&] {
            auto c = run.config("model.n_heads=3");
            lm::read_lm_train_config(c);
        },
        "model.n_heads");
    expect_error_mentions([] { io::Config c("{\"train\": ", "broken.json"); }, "broken.json");
    expect_error_mentions([] { io::Config::from_file("/nonexistent/cfg.json"); },
                          "/nonexistent/cfg.json");
}

TEST(TrainLm, DataAndResumeErrorsNameThePath) {
    TempRun run;
    auto c = run.config("data.path=/nonexistent/corpus");
    const auto bad_data = lm::read_lm_train_config(c);
    expect_error_mentions([&] { lm::train_lm(bad_data, train::StartMode::fresh); },
                          "/nonexistent/corpus");
    auto c2 = run.config();
    const auto cfg = lm::read_lm_train_config(c2);
    expect_error_mentions([&] { lm::train_lm(cfg, train::StartMode::resume); },
                          "checkpoint.safetensors");
}

// Runs the built `moe` command; returns its exit code and what it printed on stderr.
std::pair<int, std::string> run_moe(const std::string& args) {
    const std::string bin = test::bin_dir();
    const std::string err =
        (fs::temp_directory_path() / ("moe_stderr_" + std::to_string(::getpid()))).string();
    const std::string cmd = bin + "/moe " + args + " >/dev/null 2>" + err;
    const int status = std::system(cmd.c_str());
    std::ifstream in(err);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    fs::remove(err);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

TEST(MoeCommand, ErrorsExitNonZeroWithAMessage) {
    auto [code, err] = run_moe("train /nonexistent/config.json");
    EXPECT_EQ(code, 1);
    EXPECT_NE(err.find("/nonexistent/config.json"), std::string::npos) << err;
    std::tie(code, err) = run_moe("frobnicate");
    EXPECT_EQ(code, 2);
    EXPECT_NE(err.find("unknown command"), std::string::npos) << err;
    std::tie(code, err) = run_moe("info /nonexistent/model.safetensors");
    EXPECT_EQ(code, 1);
    EXPECT_NE(err.find("/nonexistent/model.safetensors"), std::string::npos) << err;
    std::tie(code, err) = run_moe("");
    EXPECT_EQ(code, 2);
    EXPECT_NE(err.find("usage"), std::string::npos) << err;
}

TEST(MoeCommand, CtrlCSavesACheckpointAndResumeContinues) {
    TempRun run;
    const std::string cfg_path = (run.dir / "cfg.json").string();
    {
        std::ofstream f(cfg_path);
        f << run.config("train.steps=1000000").doc().dump();
    }
    // SIGINT after 2 s, as Ctrl-C would send: the run stops cleanly with exit code 130. What
    // the command printed is kept, to show in the failure message.
    const std::string log = (run.dir / "log.txt").string();
    auto interrupt_after_2s = [&](const std::string& extra) {
        const std::string cmd = "timeout --preserve-status -s INT 2 " + test::bin_dir() +
                                "/moe train " + cfg_path + extra + " >" + log + " 2>&1";
        const int status = std::system(cmd.c_str());
        std::ifstream in(log);
        return std::pair{status, std::string((std::istreambuf_iterator<char>(in)),
                                             std::istreambuf_iterator<char>())};
    };
    const auto [status, out] = interrupt_after_2s("");
    ASSERT_TRUE(WIFEXITED(status)) << out;
    ASSERT_EQ(WEXITSTATUS(status), 130) << out;
    EXPECT_NE(out.find("stopping after this step"), std::string::npos) << out;
    const std::string ckpt = (run.dir / "run" / "checkpoint.safetensors").string();
    const int64_t step = std::stoll(io::SafetensorsFile(ckpt).metadata("step"));
    EXPECT_GT(step, 0);
    // --resume picks it up (run a few more steps, then interrupt again).
    const auto [status2, out2] = interrupt_after_2s(" --resume");
    ASSERT_TRUE(WIFEXITED(status2)) << out2;
    ASSERT_EQ(WEXITSTATUS(status2), 130) << out2;
    EXPECT_GT(std::stoll(io::SafetensorsFile(ckpt).metadata("step")), step);
}

}  // namespace
}  // namespace moe
