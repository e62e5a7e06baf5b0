// WindowSampler: [B, T] training windows from a token stream, and fixed evaluation windows.
//
// The batch of step s depends only on (seed, s), never on earlier calls, so a run resumed
// at step s sees exactly the batches an uninterrupted run would have seen.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::data {

class WindowSampler {
public:
    // tokens must outlive the sampler and hold at least T + 1 tokens.
    WindowSampler(const std::vector<int32_t>& tokens, int64_t T, uint64_t seed);

    // inputs, targets: [B, T]; targets are inputs shifted by one token.
    void train_batch(int64_t step, int64_t B, int32_t* inputs, int32_t* targets) const;

    // Number of non-overlapping evaluation windows of T tokens (at least 1).
    int64_t eval_windows() const;
    // Windows [first, first + B) of the fixed evaluation set.
    void eval_batch(int64_t first, int64_t B, int32_t* inputs, int32_t* targets) const;

private:
    void window(int64_t start, int32_t* inputs, int32_t* targets) const;
    const std::vector<int32_t>& tokens_;
    int64_t T_;
    uint64_t seed_;
};

// Byte-level tokens: each byte is a token in [0, 256).
std::vector<int32_t> bytes_to_tokens(const std::string& text);

}  // namespace moe::data
