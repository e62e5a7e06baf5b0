// The language-model training loop: data, model, AdamW, schedule, progress, validation,
// metrics, checkpoints, resume and Ctrl-C.
//
// Files in out_dir:  checkpoint.safetensors (parameters, AdamW moments, step, config,
//                    tokenizer, domain names), metrics.jsonl (one JSON object per logged
//                    step or evaluation), events.out.tfevents.* (the same for TensorBoard).
// Resuming loads the checkpoint and continues at the saved step; batches depend only on
// (seed, step), so a resumed run computes the same losses as an uninterrupted one.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "comm/comm.h"
#include "lm/transformer_lm.h"
#include "train/lm_train_config.h"
#include "train/run_dir.h"

namespace moe::train {

struct TrainResult {
    int64_t steps_done = 0;       // the step counter at exit
    double last_loss = 0;         // training loss of the last step
    double first_loss = 0;        // training loss of the first step of this invocation
    double val_loss = 0;          // last validation loss (0 if none)
    bool interrupted = false;     // stopped by SIGINT/SIGTERM (a checkpoint was saved)
    std::string checkpoint_path;  // where the final checkpoint went
};

// Lets a program that embeds the trainer watch each step and stop it early (a stop saves a
// checkpoint exactly like Ctrl-C). Called after each optimizer step with the new step count
// and that step's training loss; returning false stops.
struct TrainHooks {
    std::function<bool(int64_t step, double loss)> after_step;
};

// mode: what to do with a checkpoint already in cfg.out_dir (train/run_dir.h): a fresh
// start refuses one, resume continues it, overwrite replaces it. The out_dir is locked for
// the run; a second run on it fails with the first one's pid. Memory for the model and the
// data is checked before either is allocated.
// comm (optional): train over its ranks (mpirun). The global batch train.batch_size is split
// evenly (an error if it does not divide), each rank reads its share of every batch, MoE
// layers spread their experts over the ranks (moe.n_experts must divide too), replicated
// gradients are summed over the ranks, and rank 0 alone prints and writes files. The
// losses equal a single process's with the same config, up to rounding.
TrainResult train_lm(const LmTrainConfig& cfg, StartMode mode, const TrainHooks& hooks = {},
                     comm::Comm* comm = nullptr);

// What the MoE layers of a model did in its last forward, averaged over those layers.
struct RoutingSummary {
    int moe_layers = 0;
    double load_imbalance = 0;    // max / mean tokens per expert (1 = even)
    double dropped = 0;           // share of choices dropped by capacity
    double assign_accuracy = -1;  // assigned router: share of tokens whose domain the gate predicts
    // FNV-1a hash of every MoE layer's tokens per expert: two runs that route a batch
    // differently (e.g. after a near-tie between two experts went the other way) almost
    // always differ here. Logged as "routing_hash" with each step's metrics.
    uint64_t counts_hash = 0;
};
RoutingSummary summarize_routing(const lm::TransformerLM& model);

// The checkpoint file of a run directory.
std::string checkpoint_path(const std::string& out_dir);

}  // namespace moe::train
