// A multi-task model trained end to end from CSV files: a tiny run that learns both tasks,
// exact resume for each architecture, the commands (train, eval, inspect, score) working
// from the run directory alone, and config and data errors that name the key, file and line.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "io/safetensors.h"
#include "tabular/multitask_eval.h"
#include "tabular/multitask_trainer.h"
#include "tabular/row_batches.h"
#include "test_support.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& what) {
    const fs::path d = fs::temp_directory_path() /
                       ("moe_multitask_" + what + "_" + std::to_string(::getpid()) + "_" +
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

// Rows of two related tasks over a categorical column (5 colours, one of which shifts both
// targets), a high-cardinality one (city, hashed) and two numbers:
//   click  = 1 if x1 + 0.5 x2 + effect(colour) + noise > 0      (binary)
//   rating = 3 + x2 - 0.5 x1 + effect(colour) + 0.1 noise         (regression)
void write_rows(const fs::path& path, int64_t n, uint64_t seed) {
    const char* colours[] = {"red", "green", "blue", "black", "white"};
    const double effect[] = {1.0, -1.0, 0.5, 0.0, -0.5};
    Rng rng(seed);
    std::ofstream out(path);
    out << "id,colour,city,x1,x2,click,rating\n";
    for (int64_t i = 0; i < n; ++i) {
        const int c = int(rng.below(5));
        const double x1 = rng.normal(), x2 = rng.normal();
        const int click = x1 + 0.5 * x2 + effect[c] + 0.3 * rng.normal() > 0;
        const double rating = 3 + x2 - 0.5 * x1 + effect[c] + 0.1 * rng.normal();
        out << i << "," << colours[c] << ",city" << rng.below(50) << "," << x1 << "," << x2 << ","
            << click << "," << rating << "\n";
    }
}

const char* kColumns = R"({
  "categorical": [{"name": "colour", "embed_dim": 4}, {"name": "city", "embed_dim": 4,
                   "hash_buckets": 16}],
  "numeric": ["x1", "x2"],
  "targets": [{"name": "click", "kind": "binary"},
              {"name": "rating", "kind": "regression", "weight": 0.5}]
})";

io::Config config(const fs::path& dir, const std::string& arch, const std::string& extra = "") {
    nlohmann::json j = {{"task", "multitask"},
                        {"model",
                         {{"arch", arch},
                          {"d_model", 16},
                          {"expert_hidden", 16},
                          {"n_experts", 4},
                          {"ple_levels", 2},
                          {"ple_shared_experts", 1},
                          {"ple_task_experts", 1},
                          {"tower_hidden", 8}}},
                        {"train",
                         {{"steps", 6},
                          {"batch_size", 32},
                          {"lr", 1e-2},
                          {"min_lr", 1e-3},
                          {"warmup_steps", 2},
                          {"weight_decay", 0.0},
                          {"log_every", 100},
                          {"eval_every", 3},
                          {"threads", 1}}},
                        {"data",
                         {{"train", (dir / "train.csv").string()},
                          {"val", (dir / "val.csv").string()},
                          {"test", (dir / "test.csv").string()},
                          {"columns", nlohmann::json::parse(kColumns)}}},
                        {"out_dir", (dir / "run").string()}};
    io::Config c(j.dump(), "test config");
    if (!extra.empty()) c.set(extra);
    return c;
}

void write_data(const fs::path& dir) {
    write_rows(dir / "train.csv", 2000, 1);
    write_rows(dir / "val.csv", 500, 2);
    write_rows(dir / "test.csv", 500, 3);
}

std::vector<double> run_and_record(const tabular::MultitaskTrainConfig& cfg, train::StartMode mode,
                                   int64_t stop_at) {
    std::vector<double> losses;
    train::TrainHooks hooks;
    hooks.after_step = [&](int64_t step, double loss) {
        losses.push_back(loss);
        return step != stop_at;
    };
    tabular::train_multitask(cfg, mode, hooks);
    return losses;
}

TEST(RowBatches, DependOnSeedAndStepAloneAndReshuffleEachEpoch) {
    const tabular::RowBatches a(10, 4, 7), b(10, 4, 7), c(10, 4, 8);
    std::vector<int64_t> ra(4), rb(4), rc(4);
    // Batches 0..4 cover two epochs of 10 rows: every row exactly twice.
    std::vector<int> seen(10, 0);
    for (int64_t s = 0; s < 5; ++s) {
        a.rows_of(s, 0, 4, ra.data());
        for (int64_t r : ra) ++seen[size_t(r)];
    }
    for (int v : seen) EXPECT_EQ(v, 2);
    // Any order of asking gives the same rows; another seed gives others.
    a.rows_of(3, 0, 4, ra.data());
    b.rows_of(0, 0, 4, rb.data());
    b.rows_of(3, 0, 4, rb.data());
    EXPECT_EQ(ra, rb);
    c.rows_of(3, 0, 4, rc.data());
    EXPECT_NE(ra, rc);
    // Each epoch has its own order: epochs 0 and 1 of 10 rows in batches of 5.
    const tabular::RowBatches d(10, 5, 7);
    std::vector<int64_t> e0(10), e1(10);
    d.rows_of(0, 0, 5, e0.data());
    d.rows_of(1, 0, 5, e0.data() + 5);
    d.rows_of(2, 0, 5, e1.data());
    d.rows_of(3, 0, 5, e1.data() + 5);
    EXPECT_NE(e0, e1);
    // A rank's part is the matching slice of the whole batch.
    std::vector<int64_t> part(2);
    a.rows_of(3, 2, 2, part.data());
    EXPECT_EQ(part[0], ra[2]);
    EXPECT_EQ(part[1], ra[3]);
}

// 400 steps on 2000 rows: both tasks learnt far beyond a constant prediction (AUC 0.5, RMSE
// the rating's spread, about 1.3).
class MultitaskLearns : public ::testing::TestWithParam<const char*> {};

TEST_P(MultitaskLearns, BothTasksFromCsv) {
    const fs::path dir = temp_dir("learns");
    write_data(dir);
    auto c = config(dir, GetParam(), "train.steps=400");
    c.set("train.eval_every=0");
    const auto cfg = tabular::read_multitask_train_config(c);
    tabular::train_multitask(cfg, train::StartMode::fresh);
    tabular::LoadedMultitask m = tabular::load_multitask((dir / "run").string(), 256);
    const tabular::EncodedRows rows = tabular::read_encoded(m, (dir / "test.csv").string(), true);
    const tabular::MultitaskEval e = tabular::evaluate_multitask(*m.model, rows, 256);
    ASSERT_EQ(e.tasks.size(), 2u);
    EXPECT_GT(e.tasks[0].auc, 0.9) << GetParam();
    EXPECT_LT(e.tasks[1].rmse, 0.5) << GetParam();
    fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Archs, MultitaskLearns,
                         ::testing::Values("shared_bottom", "omoe", "mmoe", "ple"));

// Stopping at step 3 and resuming ends with the same losses and the same bits in every
// tensor (optimizer state included) as the uninterrupted run.
class MultitaskResume : public ::testing::TestWithParam<const char*> {};

TEST_P(MultitaskResume, ReproducesTheUninterruptedRunExactly) {
    const fs::path dir = temp_dir("resume");
    write_data(dir);
    auto c = config(dir, GetParam());
    const auto cfg = tabular::read_multitask_train_config(c);
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
    const io::SafetensorsFile fa((dir / "full.safetensors").string()),
        fb((dir / "run" / "checkpoint.safetensors").string());
    ASSERT_EQ(fa.names(), fb.names());
    for (const std::string& name : fa.names()) {
        const auto ba = fa.bytes(name), bb = fb.bytes(name);
        ASSERT_EQ(ba.size(), bb.size()) << name;
        EXPECT_EQ(0, std::memcmp(ba.data(), bb.data(), ba.size())) << name;
    }
    fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Archs, MultitaskResume,
                         ::testing::Values("shared_bottom", "omoe", "mmoe", "ple"));

std::pair<int, std::string> run_moe(const std::string& args) {
    const std::string out =
        (fs::temp_directory_path() / ("moe_multitask_out_" + std::to_string(::getpid()))).string();
    const int status =
        std::system((test::bin_dir() + "/moe " + args + " >" + out + " 2>&1").c_str());
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    fs::remove(out);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

TEST(MultitaskCommands, TrainEvalInspectScoreFromTheRunDirectory) {
    const fs::path dir = temp_dir("cli");
    write_data(dir);
    auto c = config(dir, "ple");
    std::ofstream(dir / "config.json") << c.doc().dump();
    auto [code, out] = run_moe("train " + (dir / "config.json").string() +
                               " --set train.steps=150 --set train.eval_every=50");
    ASSERT_EQ(code, 0) << out;
    EXPECT_NE(out.find("click"), std::string::npos) << out;  // per-task losses in progress
    const std::string run = (dir / "run").string();

    std::tie(code, out) = run_moe("eval " + run + " --json");
    ASSERT_EQ(code, 0) << out;
    const auto j = nlohmann::json::parse(out.substr(out.find('{')));
    EXPECT_EQ(j["rows"], 500);
    EXPECT_EQ(j["tasks"][0]["task"], "click");
    EXPECT_GT(j["tasks"][0]["auc"].get<double>(), 0.8) << out;
    EXPECT_LT(j["tasks"][1]["rmse"].get<double>(), 1.0) << out;
    std::tie(code, out) = run_moe("eval " + run + " --split val");
    ASSERT_EQ(code, 0) << out;
    EXPECT_NE(out.find("rating"), std::string::npos) << out;

    std::tie(code, out) = run_moe("inspect " + run);
    ASSERT_EQ(code, 0) << out;
    EXPECT_NE(out.find("level 1"), std::string::npos) << out;
    EXPECT_TRUE(fs::exists(dir / "run" / "gates_level0.svg"));
    EXPECT_TRUE(fs::exists(dir / "run" / "gates_level1.png"));

    // Rows to score: no targets, columns in another order, a colour never seen in training.
    {
        std::ofstream rows(dir / "rows.csv");
        rows << "x2,x1,city,colour\n0.5,1.0,city3,red\n-1,-2,cityX,purple\n";
    }
    std::tie(code, out) = run_moe("score " + run + " " + (dir / "rows.csv").string());
    ASSERT_EQ(code, 0) << out;
    std::istringstream lines(out);
    std::string header, r1, r2;
    std::getline(lines, header);
    std::getline(lines, r1);
    std::getline(lines, r2);
    EXPECT_EQ(header, "line,click,rating");
    EXPECT_EQ(r1.rfind("2,", 0), 0u) << r1;
    EXPECT_EQ(r2.rfind("3,", 0), 0u) << r2;
    // The first row's click is likely (x1 + 0.5 x2 + 1 = 2.25 > 0), the second's unlikely.
    const double p1 = std::stod(r1.substr(2)), p2 = std::stod(r2.substr(2));
    EXPECT_GT(p1, 0.7) << out;
    EXPECT_LT(p2, 0.3) << out;

    // A row with a non-numeric number: the error names file, line and column.
    {
        std::ofstream rows(dir / "bad.csv");
        rows << "x1,x2,city,colour\n1,2,city1,red\n1,two,city1,red\n";
    }
    std::tie(code, out) = run_moe("score " + run + " " + (dir / "bad.csv").string());
    EXPECT_EQ(code, 1) << out;
    EXPECT_NE(out.find("bad.csv"), std::string::npos) << out;
    EXPECT_NE(out.find("3"), std::string::npos) << out;
    EXPECT_NE(out.find("x2"), std::string::npos) << out;
    fs::remove_all(dir);
}

TEST(MultitaskConfig, ErrorsNameTheKey) {
    const fs::path dir = temp_dir("config");
    auto bad = [&](const std::string& set, const std::string& needle,
                   const std::string& arch = "mmoe") {
        EXPECT_TRUE(test::throws_error_with(
            [&] {
                auto c = config(dir, arch, set);
                tabular::read_multitask_train_config(c);
            },
            {needle}))
            << set;
    };
    bad("model.arch=\"moe\"", "model.arch");
    bad("model.archh=\"mmoe\"", "model.archh");
    bad("model.n_experts=0", "model.n_experts");
    bad("model.ple_levels=0", "model.ple_levels", "ple");
    bad("data.columns.targets=[]", "target");
    bad("data.columns.numeric=[\"x1\", \"x1\"]", "x1");
    bad("data.val=\"\"", "data.val");
    bad("task=\"vision\"", "multitask");
    fs::remove_all(dir);
}

// train.threads defaults to 1 for multi-task models (docs/multitask.md says why); a value in
// the config or from --set is kept.
TEST(MultitaskConfig, OneThreadUnlessTheConfigSaysOtherwise) {
    const fs::path dir = temp_dir("threads");
    nlohmann::json j = config(dir, "mmoe").doc();
    j["train"].erase("threads");
    io::Config without(j.dump(), "test");
    EXPECT_EQ(tabular::read_multitask_train_config(without).train.threads, 1);
    io::Config with(j.dump(), "test");
    with.set("train.threads=2");
    EXPECT_EQ(tabular::read_multitask_train_config(with).train.threads, 2);
    io::Config zero(j.dump(), "test");
    zero.set("train.threads=0");
    EXPECT_EQ(tabular::read_multitask_train_config(zero).train.threads, 0);
    fs::remove_all(dir);
}

TEST(MultitaskData, MissingFileAndColumnAreNamed) {
    const fs::path dir = temp_dir("data");
    write_data(dir);
    auto c = config(dir, "mmoe", "data.train=\"" + (dir / "nope.csv").string() + "\"");
    const auto cfg = tabular::read_multitask_train_config(c);
    EXPECT_TRUE(test::throws_error_with(
        [&] { tabular::train_multitask(cfg, train::StartMode::fresh); }, {"nope.csv"}));
    auto c2 = config(dir, "mmoe", "data.columns.numeric=[\"x1\", \"x3\"]");
    const auto cfg2 = tabular::read_multitask_train_config(c2);
    EXPECT_TRUE(test::throws_error_with(
        [&] { tabular::train_multitask(cfg2, train::StartMode::fresh); }, {"x3", "train.csv"}));
    EXPECT_FALSE(fs::exists(dir / "run" / "checkpoint.safetensors"));
    fs::remove_all(dir);
}

}  // namespace
}  // namespace moe
