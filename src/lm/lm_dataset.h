// LmDataset: a text corpus turned into what language-model training reads: token streams
// for training and validation, the domain (source file) of every token, and each domain's
// validation stream on its own for per-domain evaluation.
//
// Domains are encoded one by one and concatenated, so a training window may span the end of
// one domain and the start of the next; each token keeps its own domain label.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lm/bpe_tokenizer.h"
#include "lm/text_corpus.h"

namespace moe::lm {

struct LmDataset {
    std::vector<std::string> domains;  // names, index = label
    std::vector<int32_t> train_tokens, train_labels;
    std::vector<int32_t> val_tokens, val_labels;
    std::vector<std::vector<int32_t>> val_tokens_by_domain;

    static LmDataset build(const TextCorpus& corpus, const BpeTokenizer& tokenizer);
};

// Trains the tokenizer for a model of vocab_size ids on the corpus's training text
// (vocab_size 256: the plain byte tokenizer, nothing to train).
BpeTokenizer train_tokenizer(const TextCorpus& corpus, int64_t vocab_size);

}  // namespace moe::lm
