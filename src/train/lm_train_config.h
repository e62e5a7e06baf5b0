// Settings of a language-model training run, read from a JSON config file.
// Every key, its default and meaning is listed in docs/config.md.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "io/config.h"
#include "lm/transformer_lm.h"

namespace moe::train {

struct TrainOptions {
    int64_t steps = 600;
    int64_t batch_size = 16;
    double lr = 3e-3;
    double min_lr = 3e-4;
    int64_t warmup_steps = 30;
    double weight_decay = 0.1;
    double beta1 = 0.9;
    double beta2 = 0.95;
    double grad_clip = 1.0;  // global-norm clip; 0 disables
    int64_t seed = 1;
    int64_t threads = 0;  // 0: all cores
    int64_t log_every = 10;
    int64_t eval_every = 100;      // 0: only at the end
    int64_t eval_windows = 32;     // validation windows of seq_len tokens
    int64_t checkpoint_every = 0;  // 0: only at the end (and on Ctrl-C)
    bool tensorboard = true;       // event files in out_dir for TensorBoard
    // Sum gradients over the batch in 2^k canonical row groups (kernels/grouped_reduce.h),
    // so 1 process and R ranks (R dividing it) compute the same bits. 1: plain sums.
    int64_t reduction_groups = 1;
};

struct DataOptions {
    std::string path;  // empty: the fortunes corpus
    double val_fraction = 0.1;
};

struct LmTrainConfig {
    lm::LmConfig model;
    TrainOptions train;
    DataOptions data;
    std::string out_dir = "runs/lm";
};

// Reads every section from `cfg` and rejects unknown keys and bad values, naming them.
LmTrainConfig read_lm_train_config(io::Config& cfg);
// The same from the "config" metadata of a checkpoint (to_json's output).
LmTrainConfig lm_train_config_from_json(const std::string& json, const std::string& source);
// The full config with every default filled in (saved with checkpoints).
nlohmann::json to_json(const LmTrainConfig& c);

}  // namespace moe::train
