// train_lm: trains a language model from its config with the Trainer (train/trainer.h):
// reads the corpus, trains (or, resuming, reloads) the tokenizer, builds the TransformerLM
// and hands it to the Trainer as an LmTrainable.
//
// Checkpoint metadata besides the Trainer's "step": format "moe.cpp/lm", format_version,
// config (every key with defaults filled in), tokenizer, domains (corpus file names, index
// = domain label). A resumed run takes the tokenizer saved with the checkpoint, so it reads
// exactly the tokens the interrupted run did.
#pragma once

#include "comm/comm.h"
#include "lm/lm_train_config.h"
#include "train/run_dir.h"
#include "train/trainer.h"

namespace moe::lm {

// mode: what to do with a checkpoint already in cfg.out_dir (train/run_dir.h). Memory for
// the model and the data is checked before either is allocated, and before out_dir is
// touched. comm (optional): train over its ranks (mpirun): train.batch_size is split evenly
// (an error if it does not divide), MoE layers spread their experts over the ranks
// (moe.n_experts must divide too), and rank 0 alone prints and writes files. The losses
// equal a single process's with the same config, up to rounding (bit for bit with
// train.reduction_groups > 1).
train::TrainResult train_lm(const LmTrainConfig& cfg, train::StartMode mode,
                            const train::TrainHooks& hooks = {}, comm::Comm* comm = nullptr);

}  // namespace moe::lm
