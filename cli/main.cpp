// The `moe` command: dispatches to one subcommand per file.
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/check.h"
#include "core/memory_budget.h"
#include "core/stop_signals.h"

namespace {
void usage(FILE* out) {
    std::fprintf(
        out,
        "usage: moe COMMAND [options]\n\n"
        "commands:\n"
        "  demo      train a small language model on the default corpus and show it learning\n"
        "  train     train a model (language, vision or multi-task) from a config file\n"
        "  eval      a trained model's loss and perplexity per domain, or test accuracy per class\n"
        "  generate  write text with a trained model\n"
        "  inspect   routing report: expert load, domain- or class-by-expert usage heatmaps\n"
        "  classify  top classes of PNG images with a trained image classifier\n"
        "  score     predictions of a trained multi-task model for the rows of a CSV file\n"
        "  make-synthetic  write the MMoE paper's synthetic two-task data as CSV files\n"
        "  info      list the tensors and metadata of a safetensors checkpoint\n\n"
        "Run 'moe COMMAND --help' for the options of a command.\n");
}
}  // namespace

int main(int argc, char** argv) {
    // First, before any thread exists, so that every thread inherits the blocked mask.
    moe::install_stop_signal_watcher();
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const std::string cmd = argv[1];
    try {
        if (cmd == "demo") return moe::cli::run_demo(argc - 1, argv + 1);
        if (cmd == "train") return moe::cli::run_train(argc - 1, argv + 1);
        if (cmd == "info") return moe::cli::run_info(argc - 1, argv + 1);
        if (cmd == "eval") return moe::cli::run_eval(argc - 1, argv + 1);
        if (cmd == "inspect") return moe::cli::run_inspect(argc - 1, argv + 1);
        if (cmd == "generate") return moe::cli::run_generate(argc - 1, argv + 1);
        if (cmd == "classify") return moe::cli::run_classify(argc - 1, argv + 1);
        if (cmd == "score") return moe::cli::run_score(argc - 1, argv + 1);
        if (cmd == "make-synthetic") return moe::cli::run_make_synthetic(argc - 1, argv + 1);
    } catch (const moe::cli::UsageError& e) {
        std::fprintf(stderr, "moe %s: %s (see moe %s --help)\n", cmd.c_str(), e.what(),
                     cmd.c_str());
        return 2;
    } catch (const moe::Error& e) {
        std::fprintf(stderr, "moe %s: error: %s\n", cmd.c_str(), e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        // Sizes from users are checked before allocating; this is what slipped through.
        std::fprintf(stderr, "moe %s: error: out of memory (%s available)\n", cmd.c_str(),
                     moe::format_bytes(moe::available_memory_bytes()).c_str());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "moe %s: error: %s\n", cmd.c_str(), e.what());
        return 1;
    }
    std::fprintf(stderr, "moe: unknown command '%s'\n\n", cmd.c_str());
    usage(stderr);
    return 2;
}
