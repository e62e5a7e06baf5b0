// KV-cache decoding: token-by-token decoding, and prefill followed by decoding, give
// attention_forward's outputs on the whole sequence at every position (double to ~1e-12, the
// float path on misaligned pointers against double), and leave the cache holding the
// sequence's k (after RoPE) and v; a full cache, a used cache and a wrong config are errors;
// the arena-backed cache; the single-position RoPE helper against the table.
//
// Cost per step is O(C^2 + L C) for L positions in context (see kv_cache.h); not timed here.
// What the tests do pin down is that a step touches only rows [0, L): the cache and scratch
// start as NaN, so a read of any other row would make the outputs NaN, and rows past the
// length are checked to be still NaN.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/arena.h"
#include "nn/attention.h"
#include "nn/kv_cache.h"
#include "nn/rope.h"
#include "test_support.h"

namespace moe {
namespace {

using nn::AttentionConfig;

AttentionConfig make_config(int64_t H, int64_t D, bool rope, bool causal = true) {
    AttentionConfig cfg;
    cfg.n_heads = H;
    cfg.head_dim = D;
    cfg.causal = causal;
    cfg.rope = rope;
    return cfg;
}

// A random layer and sequence: x [T, C], weights [C, C], each stored after `pad` elements so
// the float path also runs on misaligned pointers.
template <class R>
struct Layer {
    AttentionConfig cfg;
    int64_t T, C;
    size_t pad;
    std::vector<R> x, wq, wk, wv, wo;

    const R* p(const std::vector<R>& v) const { return v.data() + pad; }
    const R* x_row(int64_t t) const { return p(x) + t * C; }
};

// Weights with std 1.5/sqrt(C), as in test_nn_attention.cpp: the softmax is neither uniform
// nor one-hot, so a wrong score changes the output visibly.
Layer<double> random_layer(int64_t T, const AttentionConfig& cfg, uint64_t seed) {
    Layer<double> l{cfg, T, cfg.n_heads * cfg.head_dim, 0, {}, {}, {}, {}, {}};
    const double ws = 1.5 / std::sqrt(double(l.C));
    l.x = test::random_normal(size_t(T * l.C), seed);
    l.wq = test::random_normal(size_t(l.C * l.C), seed + 1, ws);
    l.wk = test::random_normal(size_t(l.C * l.C), seed + 2, ws);
    l.wv = test::random_normal(size_t(l.C * l.C), seed + 3, ws);
    l.wo = test::random_normal(size_t(l.C * l.C), seed + 4, ws);
    return l;
}

Layer<float> to_float(const Layer<double>& l, size_t pad) {
    auto conv = [&](const std::vector<double>& v) {
        std::vector<float> f(pad, 0.0f);
        const auto body = test::to_f32(v);
        f.insert(f.end(), body.begin(), body.end());
        return f;
    };
    return {l.cfg, l.T, l.C, pad, conv(l.x), conv(l.wq), conv(l.wk), conv(l.wv), conv(l.wo)};
}

// attention_forward on the whole sequence (B = 1): out [T, C]; k, v [H, T, D] after RoPE.
template <class R>
struct Full {
    std::vector<R> out, q, k, v, att, y;

    explicit Full(const Layer<R>& l) {
        const size_t tc = size_t(l.T * l.C);
        out.resize(tc);
        y.resize(tc);
        q.resize(tc);
        k.resize(tc);
        v.resize(tc);
        att.resize(size_t(l.cfg.n_heads * l.T * l.T));
        nn::attention_forward(out.data(), saved(), l.p(l.x), l.p(l.wq), l.p(l.wk), l.p(l.wv),
                              l.p(l.wo), int64_t(1), l.T, l.cfg);
    }
    nn::AttentionSaved<R> saved() { return {q.data(), k.data(), v.data(), att.data(), y.data()}; }
};

// A cache and decoding scratch on NaN-filled memory, offset by `pad` elements.
template <class R>
struct Decoder {
    size_t pad;
    std::vector<R> k, v, scratch;
    nn::KvCache<R> cache;

    Decoder(int64_t max_len, const AttentionConfig& cfg, size_t pad_ = 0) : pad(pad_) {
        const R nan = std::numeric_limits<R>::quiet_NaN();
        const size_t n = size_t(nn::kv_cache_size(max_len, cfg)) + pad;
        k.assign(n, nan);
        v.assign(n, nan);
        scratch.assign(size_t(nn::attention_decode_scratch_size(max_len, cfg)) + pad, nan);
        cache = nn::make_kv_cache(k.data() + pad, v.data() + pad, max_len, cfg);
    }

    // Decodes token t of the layer's sequence (at position cache.length); returns out [C].
    std::vector<R> step(const Layer<R>& l, int64_t t) {
        std::vector<R> out(size_t(l.C) + pad, std::numeric_limits<R>::quiet_NaN());
        nn::attention_decode_forward(out.data() + pad, l.x_row(t), l.p(l.wq), l.p(l.wk), l.p(l.wv),
                                     l.p(l.wo), cache, l.cfg, scratch.data() + pad);
        return std::vector<R>(out.begin() + ptrdiff_t(pad), out.end());
    }

    // Prefills tokens [0, T); returns out [T, C].
    std::vector<R> prefill(const Layer<R>& l, int64_t T) {
        const size_t tc = size_t(T * l.C);
        std::vector<R> out(tc), q(tc), kk(tc), vv(tc), y(tc);
        std::vector<R> att(size_t(l.cfg.n_heads * T * T));
        nn::attention_prefill(out.data(), {q.data(), kk.data(), vv.data(), att.data(), y.data()},
                              l.p(l.x), l.p(l.wq), l.p(l.wk), l.p(l.wv), l.p(l.wo), T, cache,
                              l.cfg);
        return out;
    }

    // Row (h, t) of the cache's k or v.
    std::vector<R> row(const std::vector<R>& kv, int64_t h, int64_t t) const {
        const R* r = kv.data() + pad + (h * cache.max_len + t) * cache.head_dim;
        return std::vector<R>(r, r + cache.head_dim);
    }
};

std::vector<double> rows(const std::vector<double>& m, int64_t begin, int64_t end, int64_t C) {
    return std::vector<double>(m.begin() + begin * C, m.begin() + end * C);
}

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double e : v) m = std::max(m, std::abs(e));
    return m;
}

// Float against double: six chained float gemms, so the tolerance is relative to the largest
// element, as in test_nn_attention.cpp.
::testing::AssertionResult float_close(const std::vector<float>& got,
                                       const std::vector<double>& want, double rel) {
    return test::all_close(got, want, rel * std::max(1.0, max_abs(want)), rel);
}

// Decodes the layer's sequence: tokens [0, prefill_len) by attention_prefill (none when 0),
// the rest one at a time. Returns out [T, C].
template <class R>
std::vector<R> decode_sequence(Decoder<R>& dec, const Layer<R>& l, int64_t prefill_len) {
    std::vector<R> out;
    if (prefill_len > 0) out = dec.prefill(l, prefill_len);
    EXPECT_EQ(dec.cache.length, prefill_len);
    for (int64_t t = prefill_len; t < l.T; ++t) {
        const auto o = dec.step(l, t);
        EXPECT_EQ(dec.cache.length, t + 1);
        out.insert(out.end(), o.begin(), o.end());
    }
    return out;
}

// The cache rows [0, T) hold the whole-sequence k and v ([H, T, D]); rows past T are
// untouched (NaN).
template <class R>
void expect_cache_holds(const Decoder<R>& dec, const Full<double>& full, int64_t T, double tol) {
    const int64_t H = dec.cache.n_heads, D = dec.cache.head_dim;
    for (int64_t h = 0; h < H; ++h) {
        for (int64_t t = 0; t < dec.cache.max_len; ++t) {
            const auto kr = dec.row(dec.k, h, t), vr = dec.row(dec.v, h, t);
            if (t >= T) {
                for (int64_t d = 0; d < D; ++d) {
                    ASSERT_TRUE(std::isnan(kr[d]) && std::isnan(vr[d]))
                        << "row h=" << h << " t=" << t << " written past the length " << T;
                }
                continue;
            }
            const size_t at = size_t((h * T + t) * D);
            const std::vector<double> want_k(full.k.begin() + at, full.k.begin() + at + D);
            const std::vector<double> want_v(full.v.begin() + at, full.v.begin() + at + D);
            ASSERT_TRUE((test::all_close<R, double>(kr, want_k, tol, tol)))
                << "k h=" << h << " t=" << t;
            ASSERT_TRUE((test::all_close<R, double>(vr, want_v, tol, tol)))
                << "v h=" << h << " t=" << t;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decoding against the whole-sequence forward.

struct Case {
    int64_t T, H, D;
    bool rope;
    int64_t spare;  // max_len = T + spare
};

void PrintTo(const Case& c, std::ostream* os) {
    *os << "T=" << c.T << " H=" << c.H << " D=" << c.D << " rope=" << c.rope
        << " spare=" << c.spare;
}

class KvCacheDecode : public ::testing::TestWithParam<Case> {};

TEST_P(KvCacheDecode, MatchesWholeSequenceForwardAtEveryPosition) {
    const auto [T, H, D, rope, spare] = GetParam();
    const auto l = random_layer(T, make_config(H, D, rope), 10 + uint64_t(T));
    Full<double> full(l);
    const int64_t C = l.C, max_len = T + spare, half = (T + 1) / 2;

    // Double: the same kernels in the same precision, so only the summation order differs.
    for (int64_t prefill : {int64_t(0), half}) {
        SCOPED_TRACE("prefill " + std::to_string(prefill));
        Decoder<double> dec(max_len, l.cfg);
        const auto out = decode_sequence(dec, l, prefill);
        ASSERT_EQ(out.size(), full.out.size());
        for (int64_t t = 0; t < T; ++t) {
            EXPECT_TRUE(
                test::all_close(rows(out, t, t + 1, C), rows(full.out, t, t + 1, C), 1e-12, 1e-10))
                << "position " << t;
        }
        EXPECT_GT(max_abs(out), 0.1) << "the comparison would be vacuous";
        expect_cache_holds(dec, full, T, 1e-12);
    }

    // Float, misaligned, against the double forward.
    const auto lf = to_float(l, 3);
    for (int64_t prefill : {int64_t(0), half}) {
        SCOPED_TRACE("float, prefill " + std::to_string(prefill));
        Decoder<float> dec(max_len, lf.cfg, 5);
        const auto out = decode_sequence(dec, lf, prefill);
        for (int64_t t = 0; t < T; ++t) {
            const std::vector<float> got(out.begin() + t * C, out.begin() + (t + 1) * C);
            EXPECT_TRUE(float_close(got, rows(full.out, t, t + 1, C), 1e-5)) << "position " << t;
        }
        expect_cache_holds(dec, full, T, 1e-5 * std::max(1.0, max_abs(full.k)));
    }
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, KvCacheDecode,
    ::testing::Values(Case{1, 2, 4, true, 0}, Case{1, 2, 4, false, 2}, Case{7, 2, 4, true, 0},
                      Case{7, 3, 6, true, 5}, Case{7, 2, 4, false, 1},
                      // 33: past one causal block (32 rows) of attention_forward.
                      Case{33, 2, 8, true, 0}, Case{33, 3, 4, true, 4}, Case{33, 2, 8, false, 0}),
    [](const auto& info) {
        const auto& c = info.param;
        return "T" + std::to_string(c.T) + "H" + std::to_string(c.H) + "D" + std::to_string(c.D) +
               (c.rope ? "Rope" : "NoRope") + "Spare" + std::to_string(c.spare);
    });

// The model's size (C = 384 in 6 heads of 64): float decoding against double, and against
// float attention_forward on the same data.
TEST(KvCache, FloatAtModelSizeMatchesWholeSequenceForward) {
    const int64_t T = 33;
    const auto l = random_layer(T, make_config(6, 64, true), 70);
    const Full<double> full(l);
    const auto lf = to_float(l, 1);
    const Full<float> full_f(lf);
    for (int64_t prefill : {int64_t(0), int64_t(17)}) {
        SCOPED_TRACE("prefill " + std::to_string(prefill));
        Decoder<float> dec(40, lf.cfg, 1);
        const auto out = decode_sequence(dec, lf, prefill);
        EXPECT_TRUE(float_close(out, full.out, 1e-5));
        EXPECT_TRUE(float_close(out, test::to_f64(full_f.out), 1e-5));
        EXPECT_GT(max_abs(full.out), 0.1);
        expect_cache_holds(dec, full, T, 1e-5 * std::max(1.0, max_abs(full.k)));
    }
}

// One step at a long context, against the definition written out in double, with RoPE
// angles computed per element. The cache is filled directly with random rows (as if decoded
// before), so the context can be long without decoding it. C = 1024 and L = 521 reach
// kParallelMinWork (2^20 multiply-adds) in kv_cache.cpp: the projections run parallel over
// rows and the heads parallel over heads.
TEST(KvCache, LongContextStepMatchesDefinition) {
    const int64_t H = 8, D = 128, C = H * D, max_len = 600, pos = 520;
    const auto cfg = make_config(H, D, true);
    const auto l = random_layer(1, cfg, 150);
    const auto lf = to_float(l, 0);
    Decoder<float> dec(max_len, cfg);
    const auto past_k = test::random_normal(size_t(H * pos * D), 151);
    const auto past_v = test::random_normal(size_t(H * pos * D), 152);
    for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < pos * D; ++i) {
            dec.k[size_t(h * max_len * D + i)] = float(past_k[size_t(h * pos * D + i)]);
            dec.v[size_t(h * max_len * D + i)] = float(past_v[size_t(h * pos * D + i)]);
        }
    dec.cache.length = pos;
    const auto got = dec.step(lf, 0);
    EXPECT_EQ(dec.cache.length, pos + 1);

    // The definition, in double on the float-rounded inputs.
    const auto x = test::to_f64(std::vector<float>(lf.x.begin(), lf.x.end()));
    auto project = [&](const std::vector<float>& w) {
        std::vector<double> p(size_t(C), 0.0);
        for (int64_t o = 0; o < C; ++o)
            for (int64_t c = 0; c < C; ++c)
                p[size_t(o)] += double(w[size_t(o * C + c)]) * x[size_t(c)];
        return p;
    };
    auto rope = [&](std::vector<double> p) {
        for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < D / 2; ++i) {
                const double a = double(pos) * std::pow(10000.0, -2.0 * double(i) / double(D));
                const double x1 = p[size_t(h * D + i)], x2 = p[size_t(h * D + i + D / 2)];
                p[size_t(h * D + i)] = x1 * std::cos(a) - x2 * std::sin(a);
                p[size_t(h * D + i + D / 2)] = x2 * std::cos(a) + x1 * std::sin(a);
            }
        return p;
    };
    const auto q = rope(project(lf.wq)), k = rope(project(lf.wk)), v = project(lf.wv);
    auto cached = [&](const std::vector<double>& past, const std::vector<double>& now, int64_t h,
                      int64_t t, int64_t d) {
        return t < pos ? double(float(past[size_t((h * pos + t) * D + d)]))
                       : now[size_t(h * D + d)];
    };
    std::vector<double> y(size_t(C), 0.0), want(size_t(C), 0.0), s(size_t(pos + 1));
    for (int64_t h = 0; h < H; ++h) {
        double m = -INFINITY, sum = 0;
        for (int64_t t = 0; t <= pos; ++t) {
            double dot = 0;
            for (int64_t d = 0; d < D; ++d)
                dot += q[size_t(h * D + d)] * cached(past_k, k, h, t, d);
            s[size_t(t)] = dot / std::sqrt(double(D));
            m = std::max(m, s[size_t(t)]);
        }
        for (double& e : s) sum += (e = std::exp(e - m));
        for (int64_t t = 0; t <= pos; ++t)
            for (int64_t d = 0; d < D; ++d)
                y[size_t(h * D + d)] += s[size_t(t)] / sum * cached(past_v, v, h, t, d);
    }
    for (int64_t o = 0; o < C; ++o)
        for (int64_t c = 0; c < C; ++c)
            want[size_t(o)] += double(lf.wo[size_t(o * C + c)]) * y[size_t(c)];

    EXPECT_GT(max_abs(want), 0.1);
    EXPECT_TRUE(float_close(got, want, 1e-5));
    for (int64_t h = 0; h < H; ++h) {
        const std::vector<double> want_k(k.begin() + h * D, k.begin() + (h + 1) * D);
        const std::vector<double> want_v(v.begin() + h * D, v.begin() + (h + 1) * D);
        EXPECT_TRUE(float_close(dec.row(dec.k, h, pos), want_k, 1e-5)) << "k head " << h;
        EXPECT_TRUE(float_close(dec.row(dec.v, h, pos), want_v, 1e-5)) << "v head " << h;
    }
}

// out may alias x: x is read only before out is written.
TEST(KvCache, OutMayAliasX) {
    const auto l = random_layer(5, make_config(2, 4, true), 80);
    const Full<double> full(l);
    Decoder<double> dec(5, l.cfg);
    for (int64_t t = 0; t < l.T; ++t) {
        std::vector<double> io = rows(l.x, t, t + 1, l.C);
        nn::attention_decode_forward(io.data(), io.data(), l.p(l.wq), l.p(l.wk), l.p(l.wv),
                                     l.p(l.wo), dec.cache, l.cfg, dec.scratch.data());
        EXPECT_TRUE(test::all_close(io, rows(full.out, t, t + 1, l.C), 1e-12, 1e-10)) << t;
    }
}

// After reset() a new sequence starts at position 0 and the old rows are overwritten.
TEST(KvCache, ResetStartsANewSequence) {
    const auto a = random_layer(6, make_config(2, 4, true), 90);
    auto b = random_layer(4, make_config(2, 4, true), 100);
    b.wq = a.wq, b.wk = a.wk, b.wv = a.wv, b.wo = a.wo;  // the same layer, another sequence
    const Full<double> full_b(b);
    Decoder<double> dec(6, a.cfg);
    decode_sequence(dec, a, 3);
    dec.cache.reset();
    EXPECT_EQ(dec.cache.length, 0);
    const auto out = decode_sequence(dec, b, 0);
    EXPECT_TRUE(test::all_close(out, full_b.out, 1e-12, 1e-10));
    // Rows 4 and 5 still hold sequence a, so check only [0, 4) against b.
    for (int64_t h = 0; h < 2; ++h)
        for (int64_t t = 0; t < 4; ++t) {
            const size_t at = size_t((h * 4 + t) * 4);
            EXPECT_TRUE(test::all_close(
                dec.row(dec.k, h, t),
                std::vector<double>(full_b.k.begin() + at, full_b.k.begin() + at + 4), 1e-12,
                1e-12));
        }
}

// ---------------------------------------------------------------------------------------
// Errors.

TEST(KvCache, FullCacheErrorsAndChangesNothing) {
    const auto l = random_layer(4, make_config(2, 4, true), 110);
    Decoder<double> dec(3, l.cfg);
    dec.prefill(l, 2);
    dec.step(l, 2);  // the last free position
    ASSERT_EQ(dec.cache.length, 3);
    const auto k = dec.k, v = dec.v;
    EXPECT_TRUE(test::throws_error_with(
        [&] { dec.step(l, 3); },
        {"attention_decode_forward", "KV cache full", "length=3", "max_len=3"}));
    EXPECT_EQ(dec.cache.length, 3);
    for (size_t i = 0; i < k.size(); ++i) {
        ASSERT_EQ(std::isnan(dec.k[i]), std::isnan(k[i]));
        if (!std::isnan(k[i])) {
            ASSERT_EQ(dec.k[i], k[i]) << i;
        }
        if (!std::isnan(v[i])) {
            ASSERT_EQ(dec.v[i], v[i]) << i;
        }
    }
}

TEST(KvCache, PrefillErrors) {
    const auto l = random_layer(5, make_config(2, 4, true), 120);
    Decoder<double> dec(4, l.cfg);
    EXPECT_TRUE(test::throws_error_with([&] { dec.prefill(l, 5); },
                                        {"attention_prefill", "T=5", "max_len=4"}));
    EXPECT_EQ(dec.cache.length, 0);
    dec.prefill(l, 2);
    EXPECT_TRUE(test::throws_error_with([&] { dec.prefill(l, 2); },
                                        {"attention_prefill", "already holds 2"}));
    EXPECT_EQ(dec.cache.length, 2);
}

TEST(KvCache, RejectsMismatchedOrNonCausalConfig) {
    const auto l = random_layer(2, make_config(2, 4, true), 130);
    Decoder<double> dec(4, make_config(4, 2, true));  // same C, other heads
    EXPECT_TRUE(test::throws_error_with([&] { dec.step(l, 0); },
                                        {"n_heads=4", "head_dim=2", "n_heads=2", "head_dim=4"}));
    Decoder<double> ok(4, l.cfg);
    auto bidirectional = l;
    bidirectional.cfg.causal = false;
    EXPECT_TRUE(test::throws_error_with([&] { ok.step(bidirectional, 0); }, {"causal"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] { nn::attention_decode_scratch_size(4, bidirectional.cfg); }, {"causal"}));
    EXPECT_THROW(nn::kv_cache_size(0, l.cfg), Error);
    EXPECT_THROW(nn::make_kv_cache<double>(nullptr, nullptr, 4, l.cfg), Error);
    EXPECT_EQ(ok.cache.length, 0);
}

// ---------------------------------------------------------------------------------------
// Arena-backed caches and the RoPE helper.

TEST(KvCache, ArenaCachesDecodeLikeVectorCaches) {
    const auto cfg = make_config(2, 4, true);
    Arena arena;
    nn::declare_kv_cache(arena, "layers.0.attn", 9, cfg);
    nn::declare_kv_cache(arena, "layers.1.attn", 9, cfg);
    arena.allocate();
    EXPECT_EQ(arena.get("layers.1.attn.v").shape, (Shape{2, 9, 4}));
    auto c0 = nn::kv_cache_in(arena, "layers.0.attn");
    EXPECT_EQ(c0.n_heads, 2);
    EXPECT_EQ(c0.max_len, 9);
    EXPECT_EQ(c0.head_dim, 4);
    EXPECT_EQ(c0.length, 0);

    const auto l = to_float(random_layer(7, cfg, 140), 0);
    Decoder<float> ref(9, cfg);
    std::vector<float> scratch(size_t(nn::attention_decode_scratch_size(9, cfg)));
    for (int64_t t = 0; t < l.T; ++t) {
        std::vector<float> out(size_t(l.C));
        nn::attention_decode_forward(out.data(), l.x_row(t), l.p(l.wq), l.p(l.wk), l.p(l.wv),
                                     l.p(l.wo), c0, cfg, scratch.data());
        EXPECT_EQ(out, ref.step(l, t)) << "position " << t;
    }
    EXPECT_EQ(c0.length, 7);
    const float* k1 = arena.get("layers.1.attn.k").ptr<float>();
    for (int64_t i = 0; i < nn::kv_cache_size(9, cfg); ++i) ASSERT_EQ(k1[i], 0.0f) << "layer 1";
    EXPECT_TRUE(test::throws_error_with([&] { nn::kv_cache_in(arena, "layers.2.attn"); },
                                        {"layers.2.attn.k"}));
}

template <class R>
void expect_rope_position_equals_table_row() {
    const int64_t T = 1100, D = 64;
    std::vector<R> table(size_t(nn::rope_table_size(T, D)));
    nn::rope_table(table.data(), T, D, 10000.0);
    std::vector<R> cos(D / 2), sin(D / 2);
    for (int64_t pos : {0, 1, 7, 255, 1099}) {
        nn::rope_position(cos.data(), sin.data(), pos, D, 10000.0);
        for (int64_t i = 0; i < D / 2; ++i) {
            ASSERT_EQ(cos[i], table[pos * D / 2 + i]) << "pos " << pos << " i " << i;
            ASSERT_EQ(sin[i], table[T * D / 2 + pos * D / 2 + i]) << "pos " << pos << " i " << i;
        }
    }
    EXPECT_THROW(nn::rope_position(cos.data(), sin.data(), 3, 5, 10000.0), Error);
}

TEST(KvCache, RopePositionEqualsTableRowBitForBit) {
    expect_rope_position_equals_table_row<double>();
    expect_rope_position_equals_table_row<float>();
}

}  // namespace
}  // namespace moe
