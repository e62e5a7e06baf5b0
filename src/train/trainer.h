// Trainer: the training loop of every model (a Trainable, train/trainable.h).
//
//   Trainer trainer(options, out_dir, mode, comm);   // locks out_dir, threads, Ctrl-C
//   <build the data and the model; trainer.resuming() says whether to read them from
//    trainer.checkpoint() first>
//   TrainResult r = trainer.run(model, metadata);
//
// Files in out_dir:  checkpoint.safetensors (parameters, AdamW moments "optim.m.*" and
//                    "optim.v.*", metadata "step" plus the client's own), metrics.jsonl (one
//                    JSON object per logged step or evaluation), events.out.tfevents.* (the
//                    same for TensorBoard).
// A step: zero the gradients, forward on this rank's share of batch `step`, backward (in
// the canonical reduction groups when train.reduction_groups > 1), sum the replicated
// gradients over the ranks, clip by the global norm, AdamW with the schedule's learning
// rate and the model's freeze mask, the model's after_step. Its phases are marked for
// core/profile.h ("zero_grads", "grad_sum", "clip", "adamw"; the model marks its own).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "comm/comm.h"
#include "core/stop_signals.h"
#include "train/adamw.h"
#include "train/data_parallel.h"
#include "train/run_dir.h"
#include "train/train_options.h"
#include "train/trainable.h"

namespace moe::train {

struct TrainResult {
    int64_t steps_done = 0;       // the step counter at exit
    double last_loss = 0;         // training loss of the last step
    double first_loss = 0;        // training loss of the first step of this invocation
    double val_loss = 0;          // last validation loss (0 if none)
    bool interrupted = false;     // stopped by SIGINT/SIGTERM or a hook (a checkpoint was saved)
    std::string checkpoint_path;  // where the final checkpoint went
};

// Lets a program that embeds the trainer watch each step and stop it early (a stop saves a
// checkpoint exactly like Ctrl-C). Called after each optimizer step with the new step count
// and that step's training loss; returning false stops.
struct TrainHooks {
    std::function<bool(int64_t step, double loss)> after_step;
};

// The checkpoint file of a run directory.
std::string checkpoint_path(const std::string& out_dir);

// What one optimizer step did.
struct StepOutcome {
    double loss = 0;       // the whole batch's loss (summed over the ranks)
    double aux_loss = 0;   // the model's weighted auxiliary losses
    double grad_norm = 0;  // global gradient norm before clipping
    float lr = 0;
};

// One optimizer step of a Trainable over a group of ranks: what Trainer::run repeats, and
// what a benchmark times. Owns AdamW (its moments are checkpointed by the Trainer) and the
// data-parallel gradient sums.
class StepRunner {
  public:
    StepRunner(Trainable& model, const TrainOptions& opt, comm::Comm& group);
    // Runs training step `step` (0-based) and returns what it did. A non-finite loss is an
    // error naming the step.
    StepOutcome run(int64_t step);
    AdamW& optimizer() { return optim_; }

  private:
    Trainable& model_;
    TrainOptions opt_;
    comm::Comm& group_;
    std::vector<RowShard> shards_;
    int64_t local_groups_ = 1;
    DataParallelGrads dp_;
    AdamW optim_;
    LrSchedule schedule_;
};

class Trainer {
  public:
    // Stops on Ctrl-C / SIGTERM from here on (a signal during the client's set-up stops the
    // run after its first step, with a checkpoint). Sets the thread count (train.threads;
    // under mpirun 0 means this rank's share of the cores). On rank 0, locks out_dir (a
    // second run on it fails with the first one's pid) and prepares it for `mode`: a fresh
    // start refuses an existing checkpoint, resume needs one, overwrite replaces it.
    // comm: train over its ranks (nullptr: one process).
    Trainer(const TrainOptions& opt, std::string out_dir, StartMode mode,
            comm::Comm* comm = nullptr);
    ~Trainer();

    comm::Comm& group() { return *group_; }
    int64_t rank() const { return group_->rank(); }
    int64_t ranks() const { return group_->size(); }
    bool root() const { return group_->rank() == 0; }  // prints and writes files
    bool resuming() const { return mode_ == StartMode::resume; }
    const std::string& checkpoint() const { return ckpt_; }
    const std::string& out_dir() const { return out_dir_; }
    const TrainOptions& options() const { return opt_; }

    // Trains `model` to opt.steps (from the checkpoint's step when resuming: parameters and
    // AdamW moments are loaded first). `metadata` goes into every checkpoint besides "step"
    // (the client's config, tokenizer...); it is checked to be storable before the first
    // step. Returns after the final checkpoint.
    TrainResult run(Trainable& model, const std::map<std::string, std::string>& metadata,
                    const TrainHooks& hooks = {});

  private:
    TrainOptions opt_;
    std::string out_dir_, ckpt_;
    StartMode mode_;
    StopScope stop_signal_;
    std::unique_ptr<comm::Comm> single_;
    comm::Comm* group_;
    std::unique_ptr<RunDirLock> dir_lock_;
};

}  // namespace moe::train
