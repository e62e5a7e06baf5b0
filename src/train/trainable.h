// Trainable: what the Trainer (train/trainer.h) needs from a model and its data.
//
// A client (the language model in src/lm/, later vision and tabular models) implements it
// once; the Trainer owns everything else: the loop, schedule, clipping, AdamW and freeze
// masks, progress, metrics.jsonl and TensorBoard, periodic evaluation, atomic checkpoints,
// signals, exact resume and the data-parallel gradient sums over MPI ranks.
//
// Contract for exact resume: the batch of step s depends only on (seed, s), so a resumed
// run draws the same batches as an uninterrupted one. Contract for data parallelism: with
// R ranks each rank runs its own share of every global batch, and its losses are shares
// (summed over the ranks they give the whole batch's loss), so that the sum of the ranks'
// gradients is the gradient of the whole batch.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/arena.h"
#include "train/checkpoint.h"

namespace moe::train {

// Named scalars (a metric name and its value), in the order they should be shown.
using Scalars = std::vector<std::pair<std::string, double>>;

// What a model adds to a step's log line and metrics record.
struct StepReport {
    Scalars scalars;  // metrics.jsonl fields and TensorBoard "train/NAME" scalars
    std::vector<std::pair<std::string, std::string>> strings;  // metrics.jsonl fields only
    std::string progress;  // inserted into the progress line after the loss, e.g. " | router 0.04"
};

// A validation pass.
struct EvalReport {
    Scalars scalars;       // "loss" first; metrics.jsonl "val_NAME", TensorBoard "val/NAME"
    std::string progress;  // e.g. "validation loss 4.53 | perplexity 92.6"
};

class Trainable {
  public:
    virtual ~Trainable() = default;

    // Parameters and their gradients (same layout; checkpoints, AdamW and the gradient sums
    // are loops over them).
    virtual Arena& params() = 0;
    virtual Arena& grads() = 0;
    // Expert parallelism: the entries of params() that hold a slice of rows of a larger
    // tensor (empty when every rank holds every parameter).
    virtual std::vector<RowShard> sharded_params() const { return {}; }
    // One flag per element of params(): flagged elements are not updated (frozen experts).
    // nullptr: everything trains.
    virtual const uint8_t* frozen() const { return nullptr; }

    // Items (tokens, images, rows) in one global batch, for the speed figure, and their
    // unit in the progress line ("tok") and metrics ("tokens": "tokens_per_s").
    virtual int64_t items_per_batch() const = 0;
    virtual const char* item_unit() const { return "tok"; }
    virtual const char* items_name() const { return "tokens"; }

    // Forward of this rank's share of training batch `step`, training mode. Returns this
    // rank's share of the batch's mean loss. Collective under expert parallelism.
    virtual double train_forward(int64_t step) = 0;
    // The weighted auxiliary losses of the last forward (MoE router losses), for the whole
    // batch and the same on every rank. backward() includes their gradient.
    virtual double aux_loss() const { return 0; }
    // Accumulates the gradient of the last training forward into grads() (zeroed by the
    // caller).
    virtual void backward() = 0;
    // After each optimizer step (routers' non-gradient updates such as a selection bias).
    virtual void after_step() {}
    // Logged fields of the last training forward (called only at logging steps).
    virtual void report_step(StepReport& report) const {}

    // A validation pass over the held-out data, on every rank (collective), the same
    // result everywhere. Must not change anything training depends on.
    virtual EvalReport evaluate() = 0;
};

}  // namespace moe::train
