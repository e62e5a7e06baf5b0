// `moe train CONFIG [--set key=value ...] [--resume]` and `moe demo`.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "comm/comm.h"
#include "core/check.h"
#include "lm/lm_trainer.h"
#include "tabular/multitask_trainer.h"
#include "vision/vision_trainer.h"

namespace moe::cli {

namespace {

const char* kTrainUsage =
    "usage: moe train CONFIG.json [--set key=value ...] [--resume | --overwrite]\n"
    "\n"
    "Trains a model as the config file says. The config's \"task\" picks the kind:\n"
    "\"language\" (the default; docs/config.md lists every key), \"vision\" (an image\n"
    "classifier; docs/vision.md) or \"multitask\" (several prediction tasks on a CSV table\n"
    "sharing experts: MMoE, PLE; docs/multitask.md).\n"
    "\n"
    "  --set key=value   override a config key, e.g. --set train.steps=200 (repeatable)\n"
    "  --resume          continue from OUT_DIR/checkpoint.safetensors\n"
    "  --overwrite       start again in an OUT_DIR that holds a checkpoint, replacing it and\n"
    "                    the run's metrics (without either, such an OUT_DIR is refused)\n"
    "  --threads N       threads (default: all cores; same as --set train.threads=N)\n"
    "\n"
    "Ctrl-C saves a checkpoint and stops; run again with --resume to continue. OUT_DIR is\n"
    "locked while a run uses it: a second run on it fails and names the first one's pid.\n"
    "\n"
    "Distributed: mpirun -np R moe train CONFIG.json trains over R processes (docs/\n"
    "distributed.md): each rank takes train.batch_size / R sequences of every batch and\n"
    "moe.n_experts / R experts of every MoE layer; both must divide. Rank 0 prints and\n"
    "writes the files; checkpoints load with any number of ranks.\n";

// The built-in demo: the language recipe (recipes/lm/moe_fortunes.json) at a size that
// trains in about 2.5 minutes on 2 cores (17k tokens/s): an 8-expert top-2 MoE transformer on the
// fortunes corpus, with a BPE vocabulary of 2048.
const char* kDemoConfig = R"({
  "model": {"vocab_size": 2048, "d_model": 128, "n_layers": 4, "n_heads": 4, "seq_len": 128,
            "ffn": "moe"},
  "moe": {"router": "softmax_topk", "n_experts": 8, "top_k": 2, "d_expert": 256},
  "train": {"steps": 1200, "batch_size": 16, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 30,
            "log_every": 20, "eval_every": 200, "eval_windows": 32},
  "out_dir": "runs/demo"
})";

int report(const train::TrainResult& r) {
    if (r.interrupted) {
        std::printf("stopped early at step %ld; continue with --resume\n", long(r.steps_done));
        return 130;
    }
    return 0;
}

}  // namespace

int run_train(int argc, char** argv) {
    std::string path;
    std::vector<std::string> sets;
    bool resume = false, overwrite = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            std::fputs(kTrainUsage, stdout);
            return 0;
        } else if (a == "--resume") {
            resume = true;
        } else if (a == "--overwrite") {
            overwrite = true;
        } else if ((a == "--set" || a == "--threads") && i + 1 < argc) {
            sets.push_back(a == "--set" ? argv[++i] : std::string("train.threads=") + argv[++i]);
        } else if (a.rfind("--", 0) == 0) {
            std::fprintf(stderr, "moe train: unknown or incomplete option '%s'\n\n%s", a.c_str(),
                         kTrainUsage);
            return 2;
        } else if (path.empty()) {
            path = a;
        } else {
            std::fprintf(stderr, "moe train: more than one config file ('%s', '%s')\n",
                         path.c_str(), a.c_str());
            return 2;
        }
    }
    if (path.empty()) {
        std::fputs(kTrainUsage, stderr);
        return 2;
    }
    if (resume && overwrite) {
        std::fprintf(stderr, "moe train: --resume and --overwrite exclude each other\n");
        return 2;
    }
    const train::StartMode mode = resume      ? train::StartMode::resume
                                  : overwrite ? train::StartMode::overwrite
                                              : train::StartMode::fresh;
    io::Config cfg = io::Config::from_file(path);
    for (const auto& s : sets) cfg.set(s);
    const std::string task = cfg.get<std::string>("task", "language");
    MOE_REQUIRE(task == "language" || task == "vision" || task == "multitask", path,
                ": task must be \"language\", \"vision\" or \"multitask\", got \"", task, "\"");
    std::optional<lm::LmTrainConfig> lm_cfg;
    std::optional<vision::VisionTrainConfig> vision_cfg;
    std::optional<tabular::MultitaskTrainConfig> multitask_cfg;
    if (task == "vision")
        vision_cfg = vision::read_vision_train_config(cfg);
    else if (task == "multitask")
        multitask_cfg = tabular::read_multitask_train_config(cfg);
    else
        lm_cfg = lm::read_lm_train_config(cfg);
    // Under mpirun: every rank runs this; MPI starts here, after the arguments checked out.
    const std::unique_ptr<comm::Comm> comm = comm::make_world_comm();
    try {
        const train::TrainResult r =
            vision_cfg      ? vision::train_vision(*vision_cfg, mode, {}, comm.get())
            : multitask_cfg ? tabular::train_multitask(*multitask_cfg, mode, {}, comm.get())
                            : lm::train_lm(*lm_cfg, mode, {}, comm.get());
        return comm->rank() == 0 ? report(r) : (r.interrupted ? 130 : 0);
    } catch (const std::exception& e) {
        if (comm->size() == 1) throw;
        // One rank failing must end the job: the others would wait for it forever.
        std::fprintf(stderr, "moe train: error on rank %d of %d: %s\n", comm->rank(), comm->size(),
                     e.what());
        std::fflush(stderr);
        comm->abort(1);
        return 1;  // not reached
    }
}

int run_demo(int argc, char** argv) {
    io::Config cfg(kDemoConfig, "built-in demo config");
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            std::printf(
                "usage: moe demo [--set key=value ...]\n\n"
                "Trains an MoE transformer on the fortunes corpus (a few minutes on 2 cores) into\n"
                "runs/demo (replacing an earlier demo run),\n"
                "shows the loss falling, then a generated sample and the routing report.\n"
                "The built-in config is:\n%s\n",
                kDemoConfig);
            return 0;
        } else if (a == "--set" && i + 1 < argc) {
            cfg.set(argv[++i]);
        } else {
            std::fprintf(stderr, "moe demo: unknown option '%s' (see moe demo --help)\n",
                         a.c_str());
            return 2;
        }
    }
    const lm::LmTrainConfig c = lm::read_lm_train_config(cfg);
    // The demo is meant to be run again and again: it replaces its own earlier run.
    const train::TrainResult r = lm::train_lm(c, train::StartMode::overwrite);
    if (r.interrupted) return report(r);
    std::printf("\ndemo: training loss %.3f -> %.3f, validation loss %.3f (perplexity %.1f)\n",
                r.first_loss, r.last_loss, r.val_loss, std::exp(r.val_loss));

    // What the model writes, then where its tokens went.
    std::printf("\n--- moe generate %s --prompt \"The computer\" --max-tokens 120\n",
                c.out_dir.c_str());
    std::vector<std::string> gen = {"generate",     c.out_dir, "--prompt", "The computer",
                                    "--max-tokens", "120",     "--seed",   "1"};
    std::vector<char*> gen_argv;
    for (auto& g : gen) gen_argv.push_back(g.data());
    run_generate(int(gen_argv.size()), gen_argv.data());
    if (c.model.ffn == "moe") {
        std::printf("\n--- moe inspect %s\n", c.out_dir.c_str());
        std::vector<std::string> ins = {"inspect", c.out_dir, "--windows", "4"};
        std::vector<char*> ins_argv;
        for (auto& g : ins) ins_argv.push_back(g.data());
        run_inspect(int(ins_argv.size()), ins_argv.data());
    }
    return 0;
}

}  // namespace moe::cli
