// MultitaskTrainable: a multi-task model as a client of the Trainer (train/trainable.h).
//
// Batches: training batch s is RowBatches' batch s (epoch-wise reshuffled from (seed, s)
// alone), so a resumed run draws the same rows. With R ranks each runs its own B / R rows
// and its loss is weighted 1 / R, so the ranks' losses and gradients add up to the whole
// batch's. Validation runs every rank over all validation rows (they are few), so every rank
// reports the same figures.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/comm.h"
#include "tabular/multitask_model.h"
#include "tabular/row_batches.h"
#include "tabular/tabular_table.h"
#include "train/train_options.h"
#include "train/trainable.h"

namespace moe::tabular {

class MultitaskTrainable : public train::Trainable {
  public:
    // model: built for B / R rows (R = group.size()). train, val, batches and group must
    // outlive this object.
    MultitaskTrainable(MultitaskModel& model, const EncodedRows& train, const EncodedRows& val,
                       const RowBatches& batches, const train::TrainOptions& opt,
                       comm::Comm& group);

    Arena& params() override { return model_.params(); }
    Arena& grads() override { return model_.grads(); }
    int64_t items_per_batch() const override { return B_; }
    const char* item_unit() const override { return "rows"; }
    const char* items_name() const override { return "rows"; }

    double train_forward(int64_t step) override;
    void backward() override { model_.backward(); }
    void report_step(train::StepReport& report) const override;
    train::EvalReport evaluate() override;

  private:
    MultitaskModel& model_;
    const EncodedRows& train_;
    const EncodedRows& val_;
    const RowBatches& batches_;
    int64_t B_, Bl_, rank_, ranks_;
    int64_t step_ = 0;
    std::vector<int64_t> rows_;   // [Bl] table rows of this rank's share of the batch
    std::vector<int32_t> cats_;   // [Bl, C]
    std::vector<float> nums_;     // [Bl, F]
    std::vector<float> targets_;  // [Bl, K]
};

}  // namespace moe::tabular
