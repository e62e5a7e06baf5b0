// Loading a trained language model back from its checkpoint: the config, tokenizer and
// domain names kept in the metadata rebuild the model, then the weights are read.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lm/bpe_tokenizer.h"
#include "lm/lm_train_config.h"
#include "lm/transformer_lm.h"

namespace moe::lm {

struct LoadedLm {
    std::string path;  // the checkpoint file
    LmTrainConfig cfg;
    lm::BpeTokenizer tokenizer;
    std::vector<std::string> domains;  // training domains, index = label
    int64_t step = 0;
    std::unique_ptr<lm::TransformerLM> model;
};

// `path` is a checkpoint file or a run directory holding checkpoint.safetensors.
// max_batch: sequences per forward the model is sized for. Optimizer state is skipped.
// Errors name the file and what is missing or inconsistent.
LoadedLm load_lm(const std::string& path, int64_t max_batch);

}  // namespace moe::lm
