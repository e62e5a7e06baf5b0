// The "train" section of a config: the Trainer's settings, shared by every model family.
// Every key, its default and meaning is listed in docs/config.md.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "io/config.h"

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
    int64_t eval_windows = 32;     // validation batches' worth of examples (LM: windows)
    int64_t checkpoint_every = 0;  // 0: only at the end (and on Ctrl-C)
    bool tensorboard = true;       // event files in out_dir for TensorBoard
    // Sum gradients over the batch in 2^k canonical row groups (kernels/grouped_reduce.h),
    // so 1 process and R ranks (R dividing it) compute the same bits. 1: plain sums.
    int64_t reduction_groups = 1;
};

// Reads the train.* keys of `cfg` (the caller reads its own sections, calls cfg.finish(),
// then check_train_options, so that a misspelt key is reported before a bad value).
TrainOptions read_train_options(io::Config& cfg);
// Errors name `source` (the config file) and the key.
void check_train_options(const TrainOptions& t, const std::string& source);
nlohmann::json to_json(const TrainOptions& t);

}  // namespace moe::train
