// Settings of a multi-task model and its training run, read from a JSON config file
// ("task": "multitask"). Every key, its default and meaning is listed in docs/multitask.md.
//
//   {"task": "multitask",
//    "data": {"train": "data/multitask/adult/train.csv", "val": ".../val.csv",
//             "test": ".../test.csv", "columns": {<schema, tabular_table.h>}},
//    "model": {"arch": "mmoe", "n_experts": 8, ...},
//    "train": {...}, "out_dir": "runs/adult_mmoe"}
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "io/config.h"
#include "tabular/multitask_model.h"
#include "tabular/tabular_table.h"
#include "train/train_options.h"

namespace moe::tabular {

struct MultitaskDataOptions {
    std::string train, val, test;  // CSV files; test is optional (moe eval --split test)
    TabularSchema columns;
};

struct MultitaskTrainConfig {
    MultitaskModelConfig model;
    train::TrainOptions train;
    MultitaskDataOptions data;
    std::string out_dir = "runs/multitask";
};

// Reads every section of `cfg` ("task" must be "multitask"), rejecting unknown keys and bad
// values, naming them. Relative data paths are taken as written (relative to the working
// directory, like every other path of the command line).
MultitaskTrainConfig read_multitask_train_config(io::Config& cfg);
MultitaskTrainConfig multitask_train_config_from_json(const std::string& json,
                                                      const std::string& source);
nlohmann::json to_json(const MultitaskTrainConfig& c);

}  // namespace moe::tabular
