// AdamW step: one pass over the flat parameter, gradient and moment arrays.
//
// Speed. The step is memory-bound only if it vectorises: per element it reads p, g, m, v and
// writes p, m, v (28 bytes), and computes a square root and a division. Written as one plain
// loop, GCC 12 vectorises nothing: std::sqrt keeps errno semantics (a call for negative
// arguments: "control flow in loop"), and this library is not built with -fno-math-errno.
// Scalar sqrtss + divss cost ~9 cycles an element: the 49M parameters of the reference model
// (bench/train_lm) took 127 ms on one core, 62 ms on two, 85 ms of a 2.1 s training step.
// So with AVX-512 the update runs on 16 lanes with intrinsics (the square root is the exact
// IEEE one either way, v * c2 is never negative); other builds use the scalar loop. Now
// 29 ms on one core and 28 on two: memory-bound (1.4 GB at ~48 GB/s), bit for bit the old
// results.
// Each entry is split into 16-element blocks, the last n % 16 elements always go through
// the scalar code, so which path updates an element depends only on its index and the
// result is the same for every thread count.
#include "train/adamw.h"

#include <omp.h>

#include <cmath>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define MOE_ADAMW_AVX512 1
#endif

#include "core/parallel_for.h"
#include "kernels/elementwise.h"

namespace moe::train {

namespace {

// A tensor's blocks are split over the threads above this many elements (~10 us of work at
// 16 lanes, against a team wake-up of a few us).
constexpr int64_t kParallelMin = 65536;

struct Update {
    float b1, b2, c1, c2, eps, lr, decay;

    // One element: m, v, p updated in place.
    void apply(float& p, float& m, float& v, float g) const {
        m = b1 * m + (1 - b1) * g;
        v = b2 * v + (1 - b2) * g * g;
        const float update = (m * c1) / (std::sqrt(v * c2) + eps);
        p -= lr * (update + decay * p);
    }

#ifdef MOE_ADAMW_AVX512
    // Elements [0, 16) of p, m, v, g; only the lanes set in `write` are stored.
    void apply16(float* p, float* m, float* v, const float* g, __mmask16 write) const {
        const __m512 gv = _mm512_loadu_ps(g);
        __m512 mv = _mm512_loadu_ps(m), vv = _mm512_loadu_ps(v), pv = _mm512_loadu_ps(p);
        mv = _mm512_fmadd_ps(_mm512_set1_ps(b1), mv, _mm512_mul_ps(_mm512_set1_ps(1 - b1), gv));
        vv = _mm512_fmadd_ps(_mm512_set1_ps(b2), vv,
                             _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(1 - b2), gv), gv));
        const __m512 denom =
            _mm512_add_ps(_mm512_maskz_sqrt_ps(0xFFFF, _mm512_mul_ps(vv, _mm512_set1_ps(c2))),
                          _mm512_set1_ps(eps));
        const __m512 update = _mm512_div_ps(_mm512_mul_ps(mv, _mm512_set1_ps(c1)), denom);
        const __m512 step = _mm512_fmadd_ps(_mm512_set1_ps(decay), pv, update);
        pv = _mm512_fnmadd_ps(_mm512_set1_ps(lr), step, pv);
        _mm512_mask_storeu_ps(m, write, mv);
        _mm512_mask_storeu_ps(v, write, vv);
        _mm512_mask_storeu_ps(p, write, pv);
    }
#endif

    // Elements [16 b, 16 b + 16) of one tensor; fz (nullable) flags elements that must not
    // change.
    void block(float* p, float* m, float* v, const float* g, const uint8_t* fz, int64_t b) const {
        const int64_t i = b * 16;
#ifdef MOE_ADAMW_AVX512
        // Lanes whose frozen flag is 0 are written.
        const __mmask16 write =
            fz ? __mmask16(~_mm_test_epi8_mask(
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(fz + i)), _mm_set1_epi8(-1)))
               : __mmask16(0xFFFF);
        apply16(p + i, m + i, v + i, g + i, write);
#else
        tail(p, m, v, g, fz, i, i + 16);
#endif
    }
    // Elements [begin, end), one by one.
    void tail(float* p, float* m, float* v, const float* g, const uint8_t* fz, int64_t begin,
              int64_t end) const {
        for (int64_t i = begin; i < end; ++i)
            if (!fz || !fz[i]) apply(p[i], m[i], v[i], g[i]);
    }
};

}  // namespace

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
    const std::vector<Arena::Entry>& entries = params.entries();
    // One parallel region for the whole step, not one per tensor: on this shared 2-core
    // machine each fork/join can wait a scheduler slice for a descheduled thread, and with a
    // region per tensor the step took 340 ms instead of 30 under a competing process. Big
    // tensors split their blocks over the threads (no barrier between tensors: they are
    // disjoint); small ones go whole to one thread, by index.
    const int64_t total = int64_t(params.f32_count());
    parallel_team(total > kParallelMin, 0, [&](int64_t tid, int64_t nt) {
        for (size_t k = 0; k < entries.size(); ++k) {
            const Arena::Entry& e = entries[k];
            const int64_t begin = int64_t(e.offset / sizeof(float));
            const int64_t n = e.shape.numel(), blocks = n / 16;
            const Update u{b1, b2, c1, c2, eps, lr, e.shape.rank >= 2 ? cfg_.weight_decay : 0.0f};
            float* p = p_all + begin;
            const float* g = g_all + begin;
            float* m = m_all + begin;
            float* v = v_all + begin;
            const uint8_t* fz = frozen ? frozen + begin : nullptr;
            const bool split = n > kParallelMin;
            if (split) team_for_nowait(blocks, [&](int64_t b) { u.block(p, m, v, g, fz, b); });
            if (int64_t(k % size_t(nt)) != tid) continue;
            if (!split)
                for (int64_t b = 0; b < blocks; ++b) u.block(p, m, v, g, fz, b);
            u.tail(p, m, v, g, fz, blocks * 16, n);
        }
    });
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
