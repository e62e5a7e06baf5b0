#include "lm/lm_dataset.h"

#include <string_view>

namespace moe::lm {

LmDataset LmDataset::build(const TextCorpus& corpus, const BpeTokenizer& tokenizer) {
    LmDataset d;
    for (size_t i = 0; i < corpus.domains.size(); ++i) {
        const TextDomain& dom = corpus.domains[i];
        d.domains.push_back(dom.name);
        const std::vector<int32_t> train = tokenizer.encode(dom.train);
        d.train_tokens.insert(d.train_tokens.end(), train.begin(), train.end());
        d.train_labels.insert(d.train_labels.end(), train.size(), int32_t(i));
        std::vector<int32_t> val = tokenizer.encode(dom.val);
        d.val_tokens.insert(d.val_tokens.end(), val.begin(), val.end());
        d.val_labels.insert(d.val_labels.end(), val.size(), int32_t(i));
        d.val_tokens_by_domain.push_back(std::move(val));
    }
    return d;
}

BpeTokenizer train_tokenizer(const TextCorpus& corpus, int64_t vocab_size) {
    if (vocab_size <= 256) return BpeTokenizer();
    std::vector<std::string_view> texts;
    for (const auto& dom : corpus.domains) texts.push_back(dom.train);
    return BpeTokenizer::train(texts, vocab_size);
}

}  // namespace moe::lm
