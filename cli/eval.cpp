// `moe eval CHECKPOINT`: validation loss and perplexity, overall and per domain.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/threads.h"
#include "lm/lm_dataset.h"
#include "lm/lm_analysis.h"
#include "lm/lm_checkpoint.h"

namespace moe::cli {

namespace {
const char* kUsage =
    "usage: moe eval CHECKPOINT [options]\n"
    "\n"
    "(For an image classifier's or a multi-task model's run: 'moe eval RUN --help' shows its\n"
    "options.)\n"
    "\n"
    "Validation loss and perplexity of a trained model, overall and per domain. CHECKPOINT is\n"
    "a checkpoint file or a run directory. The text is the model's training corpus (or\n"
    "--data), split exactly as in training; only the validation part is read.\n"
    "\n"
    "  --data PATH       evaluate on other text (file, directory, or paths joined by ':')\n"
    "  --windows N       windows of seq_len tokens per domain (default 16)\n"
    "  --batch N         windows per forward (default 8)\n"
    "  --threads N       threads (default: all cores)\n"
    "  --route-by-label  assigned router: route each token by its true domain (an oracle\n"
    "                    gate), to separate the experts' quality from the gate's accuracy\n"
    "  --json            one JSON object instead of the table\n";
}  // namespace

int run_eval(int argc, char** argv) {
    if (names_vision_run(argc, argv)) return run_vision_eval(argc, argv);
    if (names_multitask_run(argc, argv)) return run_multitask_eval(argc, argv);
    const Args a = parse_args(argc, argv, {"--data", "--windows", "--batch", "--threads"},
                              {"--json", "--route-by-label"});
    if (a.help) return std::fputs(kUsage, stdout), 0;
    if (a.positional.size() != 1) throw UsageError("expected one CHECKPOINT");
    set_num_threads(a.get_int("--threads", 0, 0));
    const int64_t batch = a.get_int("--batch", 8), windows = a.get_int("--windows", 16);
    if (batch < 1 || windows < 1) throw UsageError("--batch and --windows must be >= 1");

    lm::LoadedLm lm = lm::load_lm(a.positional[0], batch);
    std::string data_path = a.get("--data", lm.cfg.data.path);
    if (data_path.empty()) data_path = lm::kDefaultCorpus;
    const auto corpus = lm::TextCorpus::load(data_path, lm.cfg.data.val_fraction);
    const auto ds = lm::LmDataset::build(corpus, lm.tokenizer);
    const lm::LmAnalysis r =
        lm::analyze_lm(*lm.model, ds, windows, batch, a.flags.count("--route-by-label") > 0);

    if (a.flags.count("--json")) {
        nlohmann::json j = {{"checkpoint", lm.path},
                            {"step", lm.step},
                            {"data", data_path},
                            {"loss", r.loss},
                            {"perplexity", std::exp(r.loss)}};
        if (r.gate_accuracy >= 0) j["gate_accuracy"] = r.gate_accuracy;
        for (const auto& d : r.domains) {
            nlohmann::json dj = {{"domain", d.domain}, {"tokens", d.tokens}};
            if (d.tokens > 0) dj["loss"] = d.loss, dj["perplexity"] = std::exp(d.loss);
            if (d.gate_accuracy >= 0) dj["gate_accuracy"] = d.gate_accuracy;
            j["domains"].push_back(dj);
        }
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    std::printf("%s (step %ld) on %s\n\n", lm.path.c_str(), long(lm.step), data_path.c_str());
    const bool acc = r.gate_accuracy >= 0;
    std::printf("%-24s %8s %8s %10s%s\n", "domain", "tokens", "loss", "perplexity",
                acc ? "  gate accuracy" : "");
    for (const auto& d : r.domains) {
        if (d.tokens == 0) {
            std::printf("%-24s %8s   (no validation text)\n", d.domain.c_str(), "0");
            continue;
        }
        std::printf("%-24s %8ld %8.4f %10.2f", d.domain.c_str(), long(d.tokens), d.loss,
                    std::exp(d.loss));
        if (d.gate_accuracy >= 0) std::printf("  %13.3f", d.gate_accuracy);
        std::printf("\n");
    }
    std::printf("%-24s %8s %8.4f %10.2f", "all", "", r.loss, std::exp(r.loss));
    if (acc) std::printf("  %13.3f", r.gate_accuracy);
    std::printf("\n");
    return 0;
}

}  // namespace moe::cli
