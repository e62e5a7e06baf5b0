#include "data/window_sampler.h"

#include <cstring>

#include "core/check.h"
#include "core/rng.h"

namespace moe::data {

WindowSampler::WindowSampler(const std::vector<int32_t>& tokens, int64_t T, uint64_t seed)
    : tokens_(tokens), T_(T), seed_(seed) {
    MOE_REQUIRE(int64_t(tokens.size()) >= T + 1, "text has ", tokens.size(),
                " tokens, fewer than one window of seq_len + 1 = ", T + 1);
}

void WindowSampler::window(int64_t start, int32_t* inputs, int32_t* targets) const {
    std::memcpy(inputs, tokens_.data() + start, size_t(T_) * sizeof(int32_t));
    std::memcpy(targets, tokens_.data() + start + 1, size_t(T_) * sizeof(int32_t));
}

void WindowSampler::train_batch(int64_t step, int64_t B, int32_t* inputs, int32_t* targets) const {
    Rng rng = Rng(seed_).fork(uint64_t(step));
    const uint64_t starts = uint64_t(int64_t(tokens_.size()) - T_);  // valid starts: [0, starts)
    for (int64_t b = 0; b < B; ++b)
        window(int64_t(rng.below(starts)), inputs + b * T_, targets + b * T_);
}

int64_t WindowSampler::eval_windows() const {
    return std::max<int64_t>(1, (int64_t(tokens_.size()) - 1) / T_);
}

void WindowSampler::eval_batch(int64_t first, int64_t B, int32_t* inputs, int32_t* targets) const {
    MOE_CHECK(first >= 0 && first + B <= eval_windows(), "eval_batch: windows [", first, ", ",
              first + B, ") out of ", eval_windows());
    for (int64_t b = 0; b < B; ++b) window((first + b) * T_, inputs + b * T_, targets + b * T_);
}

std::vector<int32_t> bytes_to_tokens(const std::string& text) {
    std::vector<int32_t> t(text.size());
    for (size_t i = 0; i < text.size(); ++i) t[i] = int32_t(static_cast<unsigned char>(text[i]));
    return t;
}

}  // namespace moe::data
