// KV-cache decoding. A step is a handful of matrix-vector products: three projections of x,
// per head a row of scores against the cached keys and a weighted sum of the cached values,
// and the output projection. The cache stores each head's rows contiguously ([H, max_len, D],
// not [max_len, H, D]), so a head's keys for positions 0..pos are one [L, D] block, as in
// attention_forward's [B, H, T, D].
//
// Why plain loops and not kernels::gemm with M = 1. Single-threaded, oneDNN's sgemm is no
// faster on these shapes (C = 384, H = 6, D = 64, CPU time, oneDNN vs these loops: the 4
// projections 35 vs 34 us, 6 heads at L = 1024 46 vs 48 us), but it threads matrix-vector
// products by itself, and with 2 threads on the shared cores here the same calls took 0.2 to
// 8 ms of wall time (a team waiting for a descheduled thread). The loops below run serially,
// and go parallel (over output rows, or over heads) only from kParallelMinWork on, where a
// fork/join is noise. Each output element is computed by one thread in a fixed order, so
// results do not depend on the thread count.
#include "nn/kv_cache.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/parallel_for.h"
#include "kernels/softmax.h"
#include "nn/rope.h"

namespace moe::nn {

namespace {

// Multiply-adds from which a product goes parallel: 50 to 60 us on one core (the numbers
// above), against a fork/join of a few us on idle cores. Projections go parallel from
// C = 1024; at C = 384 the heads do from L = 1366 (2 L C multiply-adds).
constexpr int64_t kParallelMinWork = 1 << 20;

bool parallel(int64_t work) {
    return work >= kParallelMinWork && !omp_in_parallel();
}

// y[N] = w[N, K] x[K]: a matrix-vector product with PyTorch's weight layout.
template <class R>
void matvec(R* y, const R* w, const R* x, int64_t N, int64_t K) {
    parallel_for(N, parallel(N * K), [&](int64_t o) {
        const R* row = w + o * K;
        R s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < K; ++c) s += row[c] * x[c];
        y[o] = s;
    });
}

// Keys handled together by attend: four independent dot products (or four value rows in one
// pass over y) hide the latency of each one's reduction (or of the store of y between keys).
// Single-threaded, 6 heads of D = 64: at L = 256 17 -> 13 us, at L = 1024 62 -> 48 us, which
// matches oneDNN's sgemm (15 and 46 us).
constexpr int64_t kKeyGroup = 4;

// One head attending over the L cached positions:
//   scores[L] = softmax(q k^T * scale),  y[D] = scores v;   q, y: [D]; k, v: [L, D].
template <class R>
void attend(R* y, R* scores, const R* q, const R* k, const R* v, int64_t L, int64_t D, R scale) {
    int64_t j = 0;
    for (; j + kKeyGroup <= L; j += kKeyGroup) {
        const R *k0 = k + j * D, *k1 = k0 + D, *k2 = k1 + D, *k3 = k2 + D;
        R s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int64_t d = 0; d < D; ++d) {
            s0 += q[d] * k0[d];
            s1 += q[d] * k1[d];
            s2 += q[d] * k2[d];
            s3 += q[d] * k3[d];
        }
        scores[j] = s0 * scale;
        scores[j + 1] = s1 * scale;
        scores[j + 2] = s2 * scale;
        scores[j + 3] = s3 * scale;
    }
    for (; j < L; ++j) {
        const R* kj = k + j * D;
        R s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < D; ++d) s += q[d] * kj[d];
        scores[j] = s * scale;
    }

    kernels::softmax_forward(scores, scores, 1, L);

    std::fill(y, y + D, R(0));
    j = 0;
    for (; j + kKeyGroup <= L; j += kKeyGroup) {
        const R *v0 = v + j * D, *v1 = v0 + D, *v2 = v1 + D, *v3 = v2 + D;
        const R p0 = scores[j], p1 = scores[j + 1], p2 = scores[j + 2], p3 = scores[j + 3];
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) y[d] += p0 * v0[d] + p1 * v1[d] + p2 * v2[d] + p3 * v3[d];
    }
    for (; j < L; ++j) {
        const R p = scores[j];
        const R* vj = v + j * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) y[d] += p * vj[d];
    }
}

// Rounds scratch offsets up to 16 elements (64 bytes in float).
int64_t round_up(int64_t n) {
    return (n + 15) / 16 * 16;
}

void check_config(const char* op, const AttentionConfig& cfg) {
    MOE_CHECK(cfg.n_heads > 0 && cfg.head_dim > 0, op, ": bad sizes n_heads=", cfg.n_heads,
              " head_dim=", cfg.head_dim);
    MOE_CHECK(!cfg.rope || (cfg.head_dim % 2 == 0 && cfg.rope_theta > 0), op,
              ": RoPE needs an even head_dim and rope_theta > 0, got head_dim=", cfg.head_dim,
              " rope_theta=", cfg.rope_theta);
    // Without the mask a position attends to later ones, which a cache cannot provide.
    MOE_CHECK(cfg.causal, op, ": a KV cache needs causal attention (cfg.causal is false)");
}

template <class R>
void check_cache(const char* op, const KvCache<R>& cache, const AttentionConfig& cfg) {
    check_config(op, cfg);
    MOE_CHECK(cache.k && cache.v, op, ": the cache has no memory (k or v is null)");
    MOE_CHECK(cache.n_heads == cfg.n_heads && cache.head_dim == cfg.head_dim, op,
              ": cache of n_heads=", cache.n_heads, " head_dim=", cache.head_dim,
              " for a layer of n_heads=", cfg.n_heads, " head_dim=", cfg.head_dim);
    MOE_CHECK(cache.max_len > 0 && cache.length >= 0 && cache.length <= cache.max_len, op,
              ": bad cache length=", cache.length, " max_len=", cache.max_len);
}

}  // namespace

int64_t kv_cache_size(int64_t max_len, const AttentionConfig& cfg) {
    MOE_CHECK(max_len > 0 && cfg.n_heads > 0 && cfg.head_dim > 0,
              "kv_cache_size: bad sizes max_len=", max_len, " n_heads=", cfg.n_heads,
              " head_dim=", cfg.head_dim);
    return cfg.n_heads * max_len * cfg.head_dim;
}

template <class R>
KvCache<R> make_kv_cache(R* k, R* v, int64_t max_len, const AttentionConfig& cfg) {
    kv_cache_size(max_len, cfg);  // checks the sizes
    MOE_CHECK(k && v, "make_kv_cache: k and v must not be null");
    KvCache<R> cache;
    cache.k = k;
    cache.v = v;
    cache.n_heads = cfg.n_heads;
    cache.max_len = max_len;
    cache.head_dim = cfg.head_dim;
    return cache;
}

void declare_kv_cache(Arena& arena, const std::string& prefix, int64_t max_len,
                      const AttentionConfig& cfg) {
    kv_cache_size(max_len, cfg);  // checks the sizes
    const Shape shape{cfg.n_heads, max_len, cfg.head_dim};
    arena.add(prefix + ".k", shape, DType::f32);
    arena.add(prefix + ".v", shape, DType::f32);
}

KvCache<float> kv_cache_in(const Arena& arena, const std::string& prefix) {
    const Tensor k = arena.get(prefix + ".k"), v = arena.get(prefix + ".v");
    MOE_CHECK(k.rank() == 3 && v.shape == k.shape, "kv_cache_in: '", prefix, ".k' is ", k.str(),
              " and '", prefix, ".v' is ", v.str(), ", expected two equal [H, max_len, D]");
    AttentionConfig cfg;
    cfg.n_heads = k.dim(0);
    cfg.head_dim = k.dim(2);
    return make_kv_cache(k.ptr<float>(), v.ptr<float>(), k.dim(1), cfg);
}

int64_t attention_decode_scratch_size(int64_t max_len, const AttentionConfig& cfg) {
    check_config("attention_decode_scratch_size", cfg);
    MOE_CHECK(max_len > 0, "attention_decode_scratch_size: bad max_len=", max_len);
    const int64_t C = cfg.n_heads * cfg.head_dim;
    // q, one projection at a time (k, then v), y: [C] each; cos, sin: [D/2] each; scores:
    // [H, max_len], a row per head so heads can run in parallel.
    return 3 * round_up(C) + round_up(cfg.head_dim) + cfg.n_heads * round_up(max_len);
}

template <class R>
void attention_decode_forward(R* out, const R* x, const R* wq, const R* wk, const R* wv,
                              const R* wo, KvCache<R>& cache, const AttentionConfig& cfg,
                              R* scratch) {
    check_cache("attention_decode_forward", cache, cfg);
    MOE_CHECK(cache.length < cache.max_len,
              "attention_decode_forward: KV cache full: length=", cache.length,
              " max_len=", cache.max_len, ", no room for position ", cache.length);
    const int64_t H = cfg.n_heads, D = cfg.head_dim, C = H * D, half = D / 2;
    const int64_t pos = cache.length, L = pos + 1, stride = cache.max_len * D;

    // Scratch layout, in the order attention_decode_scratch_size counts it.
    R* q = scratch;
    R* proj = q + round_up(C);
    R* y = proj + round_up(C);
    R* cos = y + round_up(C);
    R* sin = cos + half;
    R* scores = cos + round_up(D);
    const int64_t scores_stride = round_up(cache.max_len);

    if (cfg.rope) rope_position(cos, sin, pos, D, cfg.rope_theta);
    matvec(q, wq, x, C, C);
    if (cfg.rope)
        for (int64_t h = 0; h < H; ++h) rope_rotate(q + h * D, q + h * D, cos, sin, D);
    matvec(proj, wk, x, C, C);
    for (int64_t h = 0; h < H; ++h) {
        R* row = cache.k + h * stride + pos * D;
        if (cfg.rope)
            rope_rotate(row, proj + h * D, cos, sin, D);
        else
            std::copy(proj + h * D, proj + (h + 1) * D, row);
    }
    matvec(proj, wv, x, C, C);
    for (int64_t h = 0; h < H; ++h)
        std::copy(proj + h * D, proj + (h + 1) * D, cache.v + h * stride + pos * D);

    // The same scale as attention_forward: R(1/sqrt(D)), rounded once.
    const R scale = R(1.0 / std::sqrt(double(D)));
    parallel_for(H, H > 1 && parallel(2 * L * C), [&](int64_t h) {
        attend(y + h * D, scores + h * scores_stride, q + h * D, cache.k + h * stride,
               cache.v + h * stride, L, D, scale);
    });
    // x is not read from here on, so out may alias it.
    matvec(out, wo, y, C, C);
    cache.length = L;
}

template <class R>
void attention_prefill(R* out, const AttentionSaved<R>& saved, const R* x, const R* wq, const R* wk,
                       const R* wv, const R* wo, int64_t T, KvCache<R>& cache,
                       const AttentionConfig& cfg) {
    check_cache("attention_prefill", cache, cfg);
    // attention_forward puts the prompt at positions 0..T-1 and lets it see nothing else.
    MOE_CHECK(cache.length == 0, "attention_prefill: the cache already holds ", cache.length,
              " positions; prefill starts a sequence (reset the cache first)");
    MOE_CHECK(T > 0 && T <= cache.max_len, "attention_prefill: prompt of T=", T,
              " tokens for a KV cache of max_len=", cache.max_len);
    attention_forward(out, saved, x, wq, wk, wv, wo, int64_t(1), T, cfg);

    // saved.k (after RoPE) and saved.v are [1, H, T, D]: head h's rows are one block of T * D,
    // and go to the first T rows of the cache's [max_len, D] block of that head.
    const int64_t H = cfg.n_heads, D = cfg.head_dim, stride = cache.max_len * D;
    for (int64_t h = 0; h < H; ++h) {
        std::copy(saved.k + h * T * D, saved.k + (h + 1) * T * D, cache.k + h * stride);
        std::copy(saved.v + h * T * D, saved.v + (h + 1) * T * D, cache.v + h * stride);
    }
    cache.length = T;
}

template KvCache<float> make_kv_cache<float>(float*, float*, int64_t, const AttentionConfig&);
template KvCache<double> make_kv_cache<double>(double*, double*, int64_t, const AttentionConfig&);
template void attention_decode_forward<float>(float*, const float*, const float*, const float*,
                                              const float*, const float*, KvCache<float>&,
                                              const AttentionConfig&, float*);
template void attention_decode_forward<double>(double*, const double*, const double*, const double*,
                                               const double*, const double*, KvCache<double>&,
                                               const AttentionConfig&, double*);
template void attention_prefill<float>(float*, const AttentionSaved<float>&, const float*,
                                       const float*, const float*, const float*, const float*,
                                       int64_t, KvCache<float>&, const AttentionConfig&);
template void attention_prefill<double>(double*, const AttentionSaved<double>&, const double*,
                                        const double*, const double*, const double*, const double*,
                                        int64_t, KvCache<double>&, const AttentionConfig&);

}  // namespace moe::nn
