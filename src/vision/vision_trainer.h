// train_vision: trains an image classifier from its config with the Trainer
// (train/trainer.h): reads the images, splits off the validation images, builds the
// VisionModel and hands it to the Trainer as a VisionTrainable. load_vision reads a trained
// one back.
//
// Checkpoint metadata besides the Trainer's "step": format "moe.cpp/vision", format_version,
// config (every key with defaults filled in), classes (names, index = label), normalization
// ({"mean": [...], "std": [...]} per channel, measured on the training images), so a run
// directory alone classifies new images.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "train/run_dir.h"
#include "train/trainer.h"
#include "vision/image_batches.h"
#include "vision/vision_config.h"
#include "vision/vision_model.h"

namespace moe::vision {

// mode: what to do with a checkpoint already in cfg.out_dir. comm (optional): train over its
// ranks: train.batch_size is split evenly, MoE layers spread their experts over the ranks
// (moe.n_experts must divide), rank 0 alone prints and writes files.
train::TrainResult train_vision(const VisionTrainConfig& cfg, train::StartMode mode,
                                const train::TrainHooks& hooks = {}, comm::Comm* comm = nullptr);

struct LoadedVision {
    std::string path;  // the checkpoint file
    VisionTrainConfig cfg;
    std::vector<std::string> classes;
    Normalization norm;
    int64_t step = 0;
    std::unique_ptr<VisionModel> model;
};

// `path` is a checkpoint file or a run directory. max_batch: images per forward.
LoadedVision load_vision(const std::string& path, int64_t max_batch);

// Whether a checkpoint (file or run directory) is a vision model's: its "format" metadata.
bool is_vision_checkpoint(const std::string& path);

}  // namespace moe::vision
