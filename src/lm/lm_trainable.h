// LmTrainable: the language model as a client of the Trainer (train/trainable.h): a
// TransformerLM, its training and validation windows, and the metrics it logs.
//
// Batches: train batch s is WindowSampler::train_batch(s), B windows of seq_len tokens drawn
// from (seed, s) alone, so a resumed run reads the same batches. Every rank fills the whole
// batch (cheap) and runs its own B / R sequences [rank * B/R, (rank + 1) * B/R); its loss is
// weighted by its share of the batch's targets so the ranks' losses add up.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/comm.h"
#include "lm/transformer_lm.h"
#include "lm/window_sampler.h"
#include "train/train_options.h"
#include "train/trainable.h"

namespace moe::lm {

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
RoutingSummary summarize_routing(const TransformerLM& model);

class LmTrainable : public train::Trainable {
  public:
    // model: built for B / R sequences (R = group.size()); the samplers and group must
    // outlive this object. eval_windows: validation windows per evaluation.
    LmTrainable(TransformerLM& model, const WindowSampler& train_windows,
                const WindowSampler& val_windows, int64_t eval_windows,
                const train::TrainOptions& opt, comm::Comm& group);

    Arena& params() override { return model_.params(); }
    Arena& grads() override { return model_.grads(); }
    std::vector<train::RowShard> sharded_params() const override;
    int64_t items_per_batch() const override { return B_ * T_; }

    double train_forward(int64_t step) override;
    double aux_loss() const override { return model_.router_loss(); }
    void backward() override { model_.backward(); }
    void after_step() override { model_.after_step(); }
    void report_step(train::StepReport& report) const override;
    train::EvalReport evaluate() override;

  private:
    TransformerLM& model_;
    const WindowSampler& train_windows_;
    const WindowSampler& val_windows_;
    int64_t eval_windows_;
    uint64_t seed_;
    comm::Comm& group_;
    int64_t B_, T_, Bl_, rank_, ranks_;
    // The whole batch (every rank fills it and runs its own rows), and a rank's targets for
    // validation with the windows it does not have masked out.
    std::vector<int32_t> inputs_, targets_, labels_, eval_targets_;
};

}  // namespace moe::lm
