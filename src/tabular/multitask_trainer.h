// train_multitask: trains a multi-task model from its config with the Trainer
// (train/trainer.h): reads the training CSV, fits the encoding on it (vocabularies,
// standardisation), encodes the validation CSV with it, builds the MultitaskModel and hands
// it to the Trainer as a MultitaskTrainable. load_multitask reads a trained one back.
//
// Checkpoint metadata besides the Trainer's "step": format "moe.cpp/multitask",
// format_version, config (every key with defaults filled in, the column schema included) and
// encoding (vocabularies, means and standard deviations), so that a run directory alone
// scores new rows.
#pragma once

#include <memory>
#include <string>

#include "comm/comm.h"
#include "tabular/multitask_config.h"
#include "tabular/multitask_model.h"
#include "tabular/tabular_table.h"
#include "train/run_dir.h"
#include "train/trainer.h"

namespace moe::tabular {

// mode: what to do with a checkpoint already in cfg.out_dir. comm (optional): data
// parallelism over its ranks (train.batch_size is split evenly; rank 0 alone prints and
// writes files).
train::TrainResult train_multitask(const MultitaskTrainConfig& cfg, train::StartMode mode,
                                   const train::TrainHooks& hooks = {}, comm::Comm* comm = nullptr);

struct LoadedMultitask {
    std::string path;  // the checkpoint file
    MultitaskTrainConfig cfg;
    TabularEncoding encoding;
    int64_t step = 0;
    std::unique_ptr<MultitaskModel> model;
};

// `path` is a checkpoint file or a run directory. max_batch: rows per forward.
LoadedMultitask load_multitask(const std::string& path, int64_t max_batch);

// Whether a checkpoint (file or run directory) is a multi-task model's: its "format" metadata.
bool is_multitask_checkpoint(const std::string& path);

// Reads and encodes a CSV file with a loaded model's schema and encoding. with_targets: the
// target columns are read too (eval); without, only the features (score).
EncodedRows read_encoded(const LoadedMultitask& m, const std::string& csv, bool with_targets,
                         int64_t* skipped = nullptr);

}  // namespace moe::tabular
