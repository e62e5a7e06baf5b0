#include "train/adamw.h"

#include <cmath>
#include <vector>

#include "kernels/elementwise.h"

namespace moe::train {

AdamW::AdamW(const Arena& params, AdamWConfig cfg)
    : cfg_(cfg), m_(params.clone_layout()), v_(params.clone_layout()) {
    MOE_CHECK(cfg.beta1 >= 0 && cfg.beta1 < 1 && cfg.beta2 >= 0 && cfg.beta2 < 1,
              "AdamW: betas must be in [0, 1), got ", cfg.beta1, ", ", cfg.beta2);
    MOE_CHECK(cfg.eps > 0 && cfg.weight_decay >= 0, "AdamW: eps must be > 0 and weight_decay >= 0");
}

void AdamW::step(Arena& params, const Arena& grads, float lr, const uint8_t* frozen) {
    MOE_CHECK(params.bytes() == grads.bytes() && params.bytes() == m_.bytes(),
              "AdamW::step: parameter, gradient and moment arenas differ in layout");
    ++t_;
    const float b1 = cfg_.beta1, b2 = cfg_.beta2, eps = cfg_.eps;
    // Bias corrections in double: b2^t underflows slowly but 1 - b2^t loses digits in f32.
    const float c1 = float(1.0 / (1.0 - std::pow(double(b1), double(t_))));
    const float c2 = float(1.0 / (1.0 - std::pow(double(b2), double(t_))));
    float* p_all = params.f32_data();
    const float* g_all = grads.f32_data();
    float* m_all = m_.f32_data();
    float* v_all = v_.f32_data();
    for (const Arena::Entry& e : params.entries()) {
        const int64_t begin = int64_t(e.offset / sizeof(float));
        const int64_t n = e.shape.numel();
        const float decay = e.shape.rank >= 2 ? cfg_.weight_decay : 0.0f;
        float* p = p_all + begin;
        const float* g = g_all + begin;
        float* m = m_all + begin;
        float* v = v_all + begin;
        const uint8_t* fz = frozen ? frozen + begin : nullptr;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; ++i) {
            if (fz && fz[i]) continue;
            m[i] = b1 * m[i] + (1 - b1) * g[i];
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
            const float update = (m[i] * c1) / (std::sqrt(v[i] * c2) + eps);
            p[i] -= lr * (update + decay * p[i]);
        }
    }
}

double clip_grad_norm(Arena& grads, double max_norm) {
    float* g = grads.f32_data();
    const int64_t n = int64_t(grads.f32_count());
    const double norm = std::sqrt(kernels::sum_squares(g, n));
    if (max_norm > 0 && norm > max_norm) kernels::scale(g, float(max_norm / (norm + 1e-6)), n);
    return norm;
}

float LrSchedule::at(int64_t step) const {
    if (warmup_steps > 0 && step < warmup_steps)
        return max_lr * float(step + 1) / float(warmup_steps);
    const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
    const double progress = std::min(1.0, double(step - warmup_steps) / double(decay_steps));
    const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
    return float(min_lr + (max_lr - min_lr) * cosine);
}

}  // namespace moe::train
