#include "lm/window_sampler.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/rng.h"

namespace moe::lm {

WindowSampler::WindowSampler(const std::vector<int32_t>& tokens, int64_t T, uint64_t seed,
                             const std::vector<int32_t>& labels)
    : tokens_(tokens), labels_(labels), T_(T), seed_(seed) {
    MOE_CHECK(labels.empty() || labels.size() == tokens.size(), "WindowSampler: ", labels.size(),
              " labels for ", tokens.size(), " tokens");
    MOE_REQUIRE(int64_t(tokens.size()) >= T + 1, "text has ", tokens.size(),
                " tokens, fewer than one window of seq_len + 1 = ", T + 1);
}

void WindowSampler::window(int64_t start, int32_t* inputs, int32_t* targets,
                           int32_t* labels) const {
    std::memcpy(inputs, tokens_.data() + start, size_t(T_) * sizeof(int32_t));
    std::memcpy(targets, tokens_.data() + start + 1, size_t(T_) * sizeof(int32_t));
    if (labels) {
        MOE_CHECK(!labels_.empty(), "WindowSampler: labels asked for but none given");
        std::memcpy(labels, labels_.data() + start, size_t(T_) * sizeof(int32_t));
    }
}

void WindowSampler::train_batch(int64_t step, int64_t B, int32_t* inputs, int32_t* targets,
                                int32_t* labels) const {
    Rng rng = Rng(seed_).fork(uint64_t(step));
    const uint64_t starts = uint64_t(int64_t(tokens_.size()) - T_);  // valid starts: [0, starts)
    for (int64_t b = 0; b < B; ++b)
        window(int64_t(rng.below(starts)), inputs + b * T_, targets + b * T_,
               labels ? labels + b * T_ : nullptr);
}

int64_t WindowSampler::eval_windows() const {
    return std::max<int64_t>(1, (int64_t(tokens_.size()) - 1) / T_);
}

void WindowSampler::eval_batch(int64_t first, int64_t B, int64_t count, int32_t* inputs,
                               int32_t* targets, int32_t* labels) const {
    MOE_CHECK(count >= 1 && count <= eval_windows(), "eval_batch: ", count,
              " windows asked, the stream holds ", eval_windows());
    MOE_CHECK(first >= 0 && first + B <= count, "eval_batch: windows [", first, ", ", first + B,
              ") out of ", count);
    // Evenly spaced starts; the stride is at least T, so windows never overlap.
    const int64_t stride = (int64_t(tokens_.size()) - 1 - T_) / std::max<int64_t>(1, count - 1);
    for (int64_t b = 0; b < B; ++b) {
        const int64_t start = count == 1 ? 0 : (first + b) * stride;
        window(start, inputs + b * T_, targets + b * T_, labels ? labels + b * T_ : nullptr);
    }
}

}  // namespace moe::lm
