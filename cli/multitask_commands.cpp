// The multi-task subcommands: `moe eval RUN` and `moe inspect RUN` on a multi-task model
// (eval.cpp and inspect.cpp hand such a run over to these), and `moe score RUN rows.csv`.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/check.h"
#include "core/threads.h"
#include "io/heatmap.h"
#include "tabular/multitask_eval.h"
#include "tabular/multitask_trainer.h"

namespace moe::cli {

namespace {

const char* kEvalUsage =
    "usage: moe eval RUN [options]          (RUN: a multi-task model's run directory or "
    "checkpoint)\n"
    "\n"
    "Each task's metric on held-out rows: AUC and log loss for a binary task, MSE and RMSE\n"
    "for a regression task, and the weighted total loss the model trained on. The rows are\n"
    "the config's data.test file (--split val: data.val) or any CSV with the same columns.\n"
    "\n"
    "  --split test|val  which of the config's files (default test)\n"
    "  --data CSV        rows of another CSV file instead (it needs the target columns)\n"
    "  --batch N         rows per forward (default 1024)\n"
    "  --threads N       threads (default: all cores)\n"
    "  --json            one JSON object instead of the table\n";

const char* kInspectUsage =
    "usage: moe inspect RUN [options]       (RUN: a multi-task model's run directory or "
    "checkpoint)\n"
    "\n"
    "What the gates learned: the mean weight each task's gate gives each expert over the\n"
    "rows, one table and heatmap per level (RUN/gates_levelL.svg and .png). A task that\n"
    "leans on experts the other tasks ignore has found experts of its own; gates that agree\n"
    "share them. Runs on the validation rows unless --split test or --data.\n"
    "\n"
    "  --split val|test  which of the config's files (default val)\n"
    "  --data CSV        rows of another CSV file instead\n"
    "  --out DIR         where the heatmaps go (default: the run's directory)\n"
    "  --batch N         rows per forward (default 1024)\n"
    "  --threads N       threads (default: all cores)\n";

const char* kScoreUsage =
    "usage: moe score RUN ROWS.csv [options] > predictions.csv\n"
    "\n"
    "Predictions of a trained multi-task model for every row of a CSV file with the\n"
    "model's feature columns (found by name in its header; other columns, targets included,\n"
    "are ignored). Writes CSV to standard output: the row's line in the input, then one\n"
    "column per task: the probability of 1 for a binary task, the value for a regression\n"
    "task. ROWS.csv '-' reads standard input. Categories unseen in training score through\n"
    "the out-of-vocabulary row, as in training.\n"
    "\n"
    "  --batch N         rows per forward (default 1024)\n"
    "  --threads N       threads (default: all cores)\n";

std::string csv_of_split(const tabular::LoadedMultitask& m, const std::string& split) {
    if (split == "val") return m.cfg.data.val;
    if (split != "test") throw UsageError("--split must be test or val, got '" + split + "'");
    MOE_REQUIRE(!m.cfg.data.test.empty(), m.path,
                ": the config has no data.test file; name one with --data or use --split val");
    return m.cfg.data.test;
}

// Experts of one level in bank order: the shared experts first, then each task's, in the
// order the gates list them.
std::vector<std::string> level_experts(const std::vector<tabular::GateInfo>& gates,
                                       int64_t level) {
    std::vector<std::string> names;
    for (const auto& g : gates)
        if (g.level == level)
            for (const auto& e : g.experts)
                if (std::find(names.begin(), names.end(), e) == names.end()) names.push_back(e);
    std::stable_partition(names.begin(), names.end(),
                          [](const std::string& n) { return n.rfind("shared ", 0) == 0; });
    return names;
}

}  // namespace

bool names_multitask_run(int argc, char** argv) {
    const std::string run = first_run_argument(argc, argv);
    return !run.empty() && tabular::is_multitask_checkpoint(run);
}

int run_multitask_eval(int argc, char** argv) {
    const Args a =
        parse_args(argc, argv, {"--split", "--data", "--batch", "--threads"}, {"--json"});
    if (a.help) return std::fputs(kEvalUsage, stdout), 0;
    if (a.positional.size() != 1) throw UsageError("expected one RUN");
    set_num_threads(a.get_int("--threads", 0, 0));
    const int64_t batch = a.get_int("--batch", 1024, 1, 1 << 20);
    tabular::LoadedMultitask m = tabular::load_multitask(a.positional[0], batch);
    const std::string csv =
        a.has("--data") ? a.get("--data", "") : csv_of_split(m, a.get("--split", "test"));
    int64_t skipped = 0;
    const tabular::EncodedRows rows = tabular::read_encoded(m, csv, true, &skipped);
    MOE_REQUIRE(rows.n >= 1, csv, ": no rows to evaluate");
    const tabular::MultitaskEval e = tabular::evaluate_multitask(*m.model, rows, batch);
    if (a.flags.count("--json")) {
        nlohmann::json j = {{"checkpoint", m.path}, {"step", m.step},     {"data", csv},
                            {"rows", e.rows},       {"skipped", skipped}, {"loss", e.loss}};
        for (const auto& t : e.tasks) {
            nlohmann::json tj = {
                {"task", t.name}, {"kind", tabular::target_kind_name(t.kind)}, {"loss", t.loss}};
            if (t.kind == tabular::TargetKind::binary) {
                tj["auc"] = std::isnan(t.auc) ? nlohmann::json() : nlohmann::json(t.auc);
                tj["positive_rate"] = t.positive_rate;  // "loss" is the log loss
            } else {
                tj["mse"] = t.mse;
                tj["rmse"] = t.rmse;
            }
            j["tasks"].push_back(tj);
        }
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    std::printf("%s (step %ld, %s) on %s (%ld rows", m.path.c_str(), long(m.step),
                m.cfg.model.arch.c_str(), csv.c_str(), long(e.rows));
    if (skipped) std::printf(", %ld bad rows skipped", long(skipped));
    std::printf(")\n\n%-20s %-10s %10s %10s %10s\n", "task", "kind", "loss", "AUC", "RMSE");
    for (const auto& t : e.tasks) {
        if (t.kind == tabular::TargetKind::binary)
            std::printf("%-20s %-10s %10.4f %10.4f %10s\n", t.name.c_str(), "binary", t.loss, t.auc,
                        "-");
        else
            std::printf("%-20s %-10s %10.4f %10s %10.4f\n", t.name.c_str(), "regression", t.loss,
                        "-", t.rmse);
    }
    std::printf("%-20s %-10s %10.4f   (sum of the task weights x losses)\n", "all", "", e.loss);
    return 0;
}

int run_multitask_inspect(int argc, char** argv) {
    const Args a =
        parse_args(argc, argv, {"--split", "--data", "--out", "--batch", "--threads"}, {});
    if (a.help) return std::fputs(kInspectUsage, stdout), 0;
    if (a.positional.size() != 1) throw UsageError("expected one RUN");
    set_num_threads(a.get_int("--threads", 0, 0));
    const int64_t batch = a.get_int("--batch", 1024, 1, 1 << 20);
    tabular::LoadedMultitask m = tabular::load_multitask(a.positional[0], batch);
    const std::vector<tabular::GateInfo> gates = m.model->gates();
    MOE_REQUIRE(!gates.empty(), m.path, ": a ", m.cfg.model.arch,
                " model has no gates to inspect (model.arch \"omoe\", \"mmoe\" and \"ple\" have)");
    const std::string csv =
        a.has("--data") ? a.get("--data", "") : csv_of_split(m, a.get("--split", "val"));
    const tabular::EncodedRows rows = tabular::read_encoded(m, csv, true);
    MOE_REQUIRE(rows.n >= 1, csv, ": no rows");
    const tabular::MultitaskEval e = tabular::evaluate_multitask(*m.model, rows, batch);
    std::string out = a.get("--out", std::filesystem::path(m.path).parent_path().string());
    if (out.empty()) out = ".";
    std::filesystem::create_directories(out);
    std::printf("%s (step %ld, %s) on %s (%ld rows): %s\n", m.path.c_str(), long(m.step),
                m.cfg.model.arch.c_str(), csv.c_str(), long(e.rows), describe_metrics(e).c_str());
    int64_t levels = 0;
    for (const auto& g : gates) levels = std::max(levels, g.level + 1);
    for (int64_t level = 0; level < levels; ++level) {
        io::Heatmap h;
        h.title = levels > 1 ? "level " + std::to_string(level) + ": mean gate weight per expert"
                             : "mean gate weight per expert";
        h.col_labels = level_experts(gates, level);
        h.value_label = "mean gate weight";
        for (size_t g = 0; g < gates.size(); ++g) {
            if (gates[g].level != level) continue;
            // The title names the level: the rows need only the gate ("task income").
            std::string label = gates[g].label;
            const std::string prefix = "level " + std::to_string(level) + " ";
            if (label.rfind(prefix, 0) == 0) label = label.substr(prefix.size());
            h.row_labels.push_back(label);
            for (const std::string& col : h.col_labels) {
                const auto& ex = gates[g].experts;
                const auto it = std::find(ex.begin(), ex.end(), col);
                h.values.push_back(it == ex.end() ? std::nan("")
                                                  : e.gate_means[g][size_t(it - ex.begin())]);
            }
        }
        std::printf("\n");
        std::fputs(io::format_table(h, 3).c_str(), stdout);
        const std::string base = out + "/gates_level" + std::to_string(level);
        io::write_heatmap_svg(h, base + ".svg");
        io::write_heatmap_png(h, base + ".png");
        std::printf("heatmap: %s.svg, %s.png\n", base.c_str(), base.c_str());
    }
    return 0;
}

int run_score(int argc, char** argv) {
    const Args a = parse_args(argc, argv, {"--batch", "--threads"}, {});
    if (a.help) return std::fputs(kScoreUsage, stdout), 0;
    if (a.positional.size() != 2) throw UsageError("expected RUN and ROWS.csv");
    set_num_threads(a.get_int("--threads", 0, 0));
    const int64_t batch = a.get_int("--batch", 1024, 1, 1 << 20);
    tabular::LoadedMultitask m = tabular::load_multitask(a.positional[0], batch);
    const tabular::TabularSchema& s = m.cfg.data.columns;
    const tabular::RawTable raw = tabular::read_table(s, a.positional[1], false);
    const tabular::EncodedRows rows = tabular::encode(s, m.encoding, raw);
    std::vector<float> preds;
    if (rows.n > 0) tabular::predict_multitask(*m.model, rows, batch, preds);
    const size_t K = s.targets.size();
    std::string line = "line";
    for (const auto& t : s.targets) line += "," + t.name;
    std::printf("%s\n", line.c_str());
    for (int64_t i = 0; i < rows.n; ++i) {
        std::printf("%ld", long(raw.lines[size_t(i)]));
        for (size_t k = 0; k < K; ++k) std::printf(",%.6g", double(preds[size_t(i) * K + k]));
        std::printf("\n");
    }
    if (raw.skipped > 0)
        std::fprintf(stderr, "moe score: %ld bad rows skipped (data.columns.bad_rows = \"skip\")\n",
                     long(raw.skipped));
    return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace moe::cli
