// AdamW with decoupled weight decay (Loshchilov & Hutter), gradient clipping by global
// norm, and a warmup + cosine learning-rate schedule.
//
// Parameters, gradients and the two moments are arenas of one layout, so a step is one loop
// over flat arrays. Weight decay applies to matrices and embeddings (rank >= 2) and not to
// norm gains or biases (rank 1), the usual choice for transformers.
#pragma once

#include <cstdint>

#include "core/arena.h"

namespace moe::train {

struct AdamWConfig {
    float beta1 = 0.9f;
    float beta2 = 0.95f;
    float eps = 1e-8f;
    float weight_decay = 0.1f;
};

class AdamW {
public:
    AdamW(const Arena& params, AdamWConfig cfg);

    // One update with learning rate lr:
    //   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
    //   p -= lr * (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + wd * p)
    // `frozen`, if given, is one flag per parameter element; flagged elements do not change.
    void step(Arena& params, const Arena& grads, float lr, const uint8_t* frozen = nullptr);

    int64_t steps() const { return t_; }
    void set_steps(int64_t t) { t_ = t; }
    Arena& m() { return m_; }
    Arena& v() { return v_; }
    const AdamWConfig& config() const { return cfg_; }

private:
    AdamWConfig cfg_;
    Arena m_, v_;
    int64_t t_ = 0;
};

// Scales every gradient so that the global L2 norm is at most max_norm (no-op if
// max_norm <= 0). Returns the norm before clipping.
double clip_grad_norm(Arena& grads, double max_norm);

// Linear warmup from 0 to max_lr over warmup_steps, then cosine decay to min_lr at
// total_steps, flat after.
struct LrSchedule {
    float max_lr = 3e-4f;
    float min_lr = 3e-5f;
    int64_t warmup_steps = 0;
    int64_t total_steps = 1;
    float at(int64_t step) const;  // step counts from 0
};

}  // namespace moe::train
