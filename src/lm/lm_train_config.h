// Settings of a language-model training run, read from a JSON config file.
// Every key, its default and meaning is listed in docs/config.md.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "io/config.h"
#include "lm/transformer_lm.h"
#include "train/train_options.h"

namespace moe::lm {

struct DataOptions {
    std::string path;  // empty: the fortunes corpus
    double val_fraction = 0.1;
};

struct LmTrainConfig {
    lm::LmConfig model;
    train::TrainOptions train;
    DataOptions data;
    std::string out_dir = "runs/lm";
};

// Reads every section from `cfg` and rejects unknown keys and bad values, naming them.
LmTrainConfig read_lm_train_config(io::Config& cfg);
// The same from the "config" metadata of a checkpoint (to_json's output).
LmTrainConfig lm_train_config_from_json(const std::string& json, const std::string& source);
// The full config with every default filled in (saved with checkpoints).
nlohmann::json to_json(const LmTrainConfig& c);

}  // namespace moe::lm
