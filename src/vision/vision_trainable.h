// VisionTrainable: an image classifier as a client of the Trainer (train/trainable.h).
//
// Batches: training batch s is TrainBatches' batch s (epoch-wise reshuffled, augmented from
// (seed, s) alone), so a resumed run draws the same images with the same crops and flips.
// With R ranks each runs its own B / R images [rank * B/R, (rank + 1) * B/R) and its loss
// is weighted 1 / R, so the ranks' losses and gradients add up to the whole batch's.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/comm.h"
#include "train/train_options.h"
#include "train/trainable.h"
#include "vision/classifier_eval.h"
#include "vision/image_batches.h"
#include "vision/vision_data.h"
#include "vision/vision_model.h"

namespace moe::vision {

class VisionTrainable : public train::Trainable {
  public:
    // model: built for B / R images (R = group.size()). data, batches and group must outlive
    // this object. domains: data.domains (the assigned router's labels).
    VisionTrainable(VisionModel& model, const VisionData& data, const TrainBatches& batches,
                    const std::string& domains, const train::TrainOptions& opt, comm::Comm& group);

    Arena& params() override { return model_.params(); }
    Arena& grads() override { return model_.grads(); }
    std::vector<train::RowShard> sharded_params() const override;
    int64_t items_per_batch() const override { return B_; }
    const char* item_unit() const override { return "img"; }
    const char* items_name() const override { return "images"; }

    double train_forward(int64_t step) override;
    double aux_loss() const override { return model_.router_loss(); }
    void backward() override { model_.backward(); }
    void after_step() override { model_.after_step(); }
    void report_step(train::StepReport& report) const override;
    train::EvalReport evaluate() override;

  private:
    VisionModel& model_;
    const VisionData& data_;
    const TrainBatches& batches_;
    std::string domains_mode_;
    uint64_t seed_;
    comm::Comm& group_;
    int64_t B_, Bl_, rank_, ranks_;
    int64_t step_ = 0;
    std::vector<float> x_;                   // [Bl, H, W, C]
    std::vector<int32_t> labels_, domains_;  // [Bl]
};

}  // namespace moe::vision
