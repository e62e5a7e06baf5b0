// WindowSampler: [B, T] training windows from a token stream, and fixed evaluation windows.
//
// The batch of step s depends only on (seed, s), never on earlier calls, so a run resumed
// at step s sees exactly the batches an uninterrupted run would have seen.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::lm {

class WindowSampler {
  public:
    // tokens (and labels, empty or one per token) must outlive the sampler; tokens must
    // hold at least T + 1 tokens.
    WindowSampler(const std::vector<int32_t>& tokens, int64_t T, uint64_t seed,
                  const std::vector<int32_t>& labels = {});

    // inputs, targets: [B, T]; targets are inputs shifted by one token. labels: [B, T] the
    // label of each input token (may be null; needs labels at construction).
    void train_batch(int64_t step, int64_t B, int32_t* inputs, int32_t* targets,
                     int32_t* labels = nullptr) const;

    // Number of non-overlapping evaluation windows of T tokens (at least 1).
    int64_t eval_windows() const;
    // Windows [first, first + B) of a fixed evaluation set of `count` <= eval_windows()
    // windows spread evenly over the whole stream (so every part of it, every domain,
    // is represented even when count is small).
    void eval_batch(int64_t first, int64_t B, int64_t count, int32_t* inputs, int32_t* targets,
                    int32_t* labels = nullptr) const;

  private:
    void window(int64_t start, int32_t* inputs, int32_t* targets, int32_t* labels) const;
    const std::vector<int32_t>& tokens_;
    const std::vector<int32_t>& labels_;
    int64_t T_;
    uint64_t seed_;
};

}  // namespace moe::lm
