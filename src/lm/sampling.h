// Choosing the next token from logits: temperature, top-k and top-p (nucleus) sampling.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace moe::lm {

struct SamplingOptions {
    double temperature = 0.8;  // 0: always the most likely token (greedy)
    int64_t top_k = 0;         // keep the k most likely tokens; 0: all
    double top_p = 1.0;        // keep the smallest set whose probability reaches top_p
};

// Samples from softmax(logits / temperature) restricted by top_k and top_p, renormalised.
// logits: [V]. `work` is reused between calls to avoid allocating per token.
int32_t sample_token(const float* logits, int64_t V, const SamplingOptions& opt, Rng& rng,
                     std::vector<std::pair<float, int32_t>>& work);

}  // namespace moe::lm
