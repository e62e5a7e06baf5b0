// `moe inspect CHECKPOINT`: the routing report. Per MoE layer, how the load spreads over the
// experts; a domain-by-expert usage matrix (table and heatmap images); for the assigned
// router, how well the gate predicts each token's domain.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/threads.h"
#include "io/heatmap.h"
#include "lm/lm_analysis.h"
#include "lm/lm_checkpoint.h"
#include "lm/lm_dataset.h"

namespace moe::cli {

namespace {
const char* kUsage =
    "usage: moe inspect CHECKPOINT [options]\n"
    "\n"
    "(For an image classifier's or a multi-task model's run: 'moe inspect RUN --help' shows\n"
    "its options.)\n"
    "\n"
    "Routing report of a trained MoE model on its validation text: per-layer expert load,\n"
    "a domain-by-expert usage matrix (each row: where that domain's tokens went, as shares\n"
    "summing to 1) printed and drawn as heatmaps, and the gate's domain accuracy for the\n"
    "assigned router.\n"
    "\n"
    "  --out DIR         where the heatmaps go (default: the checkpoint's directory)\n"
    "  --layer N         the MoE layer whose matrix is printed (default: the last)\n"
    "  --data PATH       other text (file, directory, or paths joined by ':')\n"
    "  --windows N       windows of seq_len tokens per domain (default 8)\n"
    "  --batch N         windows per forward (default 8)\n"
    "  --threads N       threads (default: all cores)\n";
}  // namespace

int run_inspect(int argc, char** argv) {
    if (names_vision_run(argc, argv)) return run_vision_inspect(argc, argv);
    if (names_multitask_run(argc, argv)) return run_multitask_inspect(argc, argv);
    const Args a = parse_args(
        argc, argv, {"--out", "--layer", "--data", "--windows", "--batch", "--threads"}, {});
    if (a.help) return std::fputs(kUsage, stdout), 0;
    if (a.positional.size() != 1) throw UsageError("expected one CHECKPOINT");
    set_num_threads(a.get_int("--threads", 0, 0));
    const int64_t batch = a.get_int("--batch", 8), windows = a.get_int("--windows", 8);
    if (batch < 1 || windows < 1) throw UsageError("--batch and --windows must be >= 1");

    lm::LoadedLm lm = lm::load_lm(a.positional[0], batch);
    MOE_REQUIRE(lm.cfg.model.ffn == "moe", lm.path,
                ": a dense model (model.ffn = \"dense\") has no routing to inspect");
    std::string data_path = a.get("--data", lm.cfg.data.path);
    if (data_path.empty()) data_path = lm::kDefaultCorpus;
    const auto corpus = lm::TextCorpus::load(data_path, lm.cfg.data.val_fraction);
    const auto ds = lm::LmDataset::build(corpus, lm.tokenizer);
    const lm::LmAnalysis r = lm::analyze_lm(*lm.model, ds, windows, batch);
    const int64_t E = lm.cfg.model.moe.n_experts;

    std::printf("%s (step %ld): %ld experts, top-%ld, router %s, %zu MoE layers\n\n",
                lm.path.c_str(), long(lm.step), long(E), long(lm.cfg.model.moe.top_k),
                lm.cfg.model.moe.router.c_str(), r.moe_layers.size());
    // Load per layer: each expert's share of all routed rows.
    std::printf("expert load (share of routed tokens; even = %.3f)\n%-8s", 1.0 / double(E),
                "layer");
    for (int64_t e = 0; e < E; ++e) std::printf(" %6ld", long(e));
    std::printf("   max/mean\n");
    for (size_t i = 0; i < r.moe_layers.size(); ++i) {
        std::vector<double> load(size_t(E), 0.0);
        double total = 0;
        for (const auto& dom : r.usage[i])
            for (int64_t e = 0; e < E; ++e)
                load[size_t(e)] += double(dom[size_t(e)]), total += double(dom[size_t(e)]);
        std::printf("%-8ld", long(r.moe_layers[i]));
        double mx = 0;
        for (double v : load)
            std::printf(" %6.3f", total > 0 ? v / total : 0.0), mx = std::max(mx, v);
        std::printf("   %8.2f\n", total > 0 ? mx / (total / double(E)) : 0.0);
    }

    int64_t layer_pos = int64_t(r.moe_layers.size()) - 1;
    if (a.has("--layer")) {
        const int64_t want = a.get_int("--layer", 0);
        layer_pos = -1;
        for (size_t i = 0; i < r.moe_layers.size(); ++i)
            if (r.moe_layers[i] == want) layer_pos = int64_t(i);
        if (layer_pos < 0)
            throw UsageError("--layer " + std::to_string(want) + " is not an MoE layer");
    }
    const std::string out_dir =
        a.get("--out", std::filesystem::path(lm.path).parent_path().string());
    std::filesystem::create_directories(out_dir.empty() ? "." : out_dir);
    for (size_t i = 0; i < r.moe_layers.size(); ++i) {
        io::Heatmap h;
        h.title = "layer " + std::to_string(r.moe_layers[i]) +
                  ": share of each domain's tokens per expert";
        h.value_label = "share of the domain's routed tokens";
        for (int64_t e = 0; e < E; ++e) {
            // snprintf, not "e" + std::to_string(e): GCC 12 flags that with a false -Wrestrict.
            char label[24];
            std::snprintf(label, sizeof label, "e%ld", long(e));
            h.col_labels.emplace_back(label);
        }
        for (size_t d = 0; d < ds.domains.size(); ++d) {
            double total = 0;
            for (int64_t c : r.usage[i][d]) total += double(c);
            if (total == 0) continue;  // a domain with no validation text
            h.row_labels.push_back(ds.domains[d]);
            for (int64_t c : r.usage[i][d]) h.values.push_back(double(c) / total);
        }
        const std::string base = (out_dir.empty() ? std::string(".") : out_dir) + "/routing_layer" +
                                 std::to_string(r.moe_layers[i]);
        io::write_heatmap_png(h, base + ".png");
        io::write_heatmap_svg(h, base + ".svg");
        if (int64_t(i) == layer_pos) {
            std::printf("\n%s", io::format_table(h, 2).c_str());
        }
        std::printf("%s%s.png and .svg\n", int64_t(i) == layer_pos ? "\n" : "", base.c_str());
    }
    if (r.gate_accuracy >= 0) {
        std::printf("\ngate accuracy at predicting the domain: %.3f overall\n", r.gate_accuracy);
        for (const auto& d : r.domains)
            if (d.tokens > 0) std::printf("  %-24s %.3f\n", d.domain.c_str(), d.gate_accuracy);
    }
    return 0;
}

}  // namespace moe::cli
