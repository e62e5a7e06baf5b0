// Multi-head self-attention: finite differences in double for every gradient, causality,
// exact zeros through the mask, a PyTorch fixture (double and float paths), and the float
// path against the double path on larger sizes, including the T > 1024 path where heads run
// one after another and each gemm is threaded.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

#include "nn/attention.h"
#include "test_support.h"

namespace moe {
namespace {

using nn::AttentionConfig;

AttentionConfig make_config(int64_t H, int64_t D, bool causal, bool rope) {
    AttentionConfig cfg;
    cfg.n_heads = H;
    cfg.head_dim = D;
    cfg.causal = causal;
    cfg.rope = rope;
    return cfg;
}

// Every buffer of one attention call. Saved buffers, the output and the scratch start as NaN,
// so a test fails if anything reads memory the code did not write first. `pad` offsets every
// pointer by that many elements, to run the float path on misaligned data.
template <class R>
struct Attn {
    int64_t B, T, H, D, C, N;
    AttentionConfig cfg;
    size_t pad;
    std::vector<R> x, wq, wk, wv, wo, out, q, k, v, att, y;
    std::vector<R> d_x, d_wq, d_wk, d_wv, d_wo, scratch;

    Attn(int64_t B_, int64_t T_, const AttentionConfig& cfg_, size_t pad_ = 0)
        : B(B_),
          T(T_),
          H(cfg_.n_heads),
          D(cfg_.head_dim),
          C(H * D),
          N(B * T),
          cfg(cfg_),
          pad(pad_) {
        const R nan = std::numeric_limits<R>::quiet_NaN();
        const size_t nc = size_t(N * C) + pad, cc = size_t(C * C) + pad;
        x.assign(nc, R(0));
        d_x.assign(nc, R(0));
        out.assign(nc, nan);
        y.assign(nc, nan);
        for (auto* w : {&wq, &wk, &wv, &wo}) w->assign(cc, R(0));
        for (auto* w : {&d_wq, &d_wk, &d_wv, &d_wo}) w->assign(cc, R(0));
        for (auto* s : {&q, &k, &v}) s->assign(size_t(B * H * T * D) + pad, nan);
        att.assign(size_t(B * H * T * T) + pad, nan);
        scratch.assign(size_t(nn::attention_scratch_size(B, T, cfg)) + pad, nan);
    }

    nn::AttentionSaved<R> saved() {
        return {q.data() + pad, k.data() + pad, v.data() + pad, att.data() + pad, y.data() + pad};
    }
    void forward() {
        nn::attention_forward(out.data() + pad, saved(), x.data() + pad, wq.data() + pad,
                              wk.data() + pad, wv.data() + pad, wo.data() + pad, B, T, cfg);
    }
    void backward(const std::vector<R>& d_out) {  // d_out: [B, T, C], unpadded
        std::vector<R> d(pad, R(0));
        d.insert(d.end(), d_out.begin(), d_out.end());
        std::fill(scratch.begin(), scratch.end(), std::numeric_limits<R>::quiet_NaN());
        nn::attention_backward(d_x.data() + pad, d_wq.data() + pad, d_wk.data() + pad,
                               d_wv.data() + pad, d_wo.data() + pad, scratch.data() + pad,
                               d.data() + pad, saved(), x.data() + pad, wq.data() + pad,
                               wk.data() + pad, wv.data() + pad, wo.data() + pad, B, T, cfg);
    }
    // Without the padding.
    static std::vector<R> body(const std::vector<R>& v, size_t pad) {
        return std::vector<R>(v.begin() + ptrdiff_t(pad), v.end());
    }
    std::vector<R> get(const std::vector<R>& v) const { return body(v, pad); }
    void set(std::vector<R>& dst, const std::vector<R>& src) {
        std::copy(src.begin(), src.end(), dst.begin() + ptrdiff_t(pad));
    }
};

// Random inputs; weights with std 1.5/sqrt(C), so the softmax is neither uniform nor one-hot.
void fill_random(Attn<double>& a, uint64_t seed) {
    a.set(a.x, test::random_normal(size_t(a.N * a.C), seed));
    const double ws = 1.5 / std::sqrt(double(a.C));
    a.set(a.wq, test::random_normal(size_t(a.C * a.C), seed + 1, ws));
    a.set(a.wk, test::random_normal(size_t(a.C * a.C), seed + 2, ws));
    a.set(a.wv, test::random_normal(size_t(a.C * a.C), seed + 3, ws));
    a.set(a.wo, test::random_normal(size_t(a.C * a.C), seed + 4, ws));
}

// The float problem with the same data as a double one.
Attn<float> to_float(const Attn<double>& a, size_t pad) {
    Attn<float> f(a.B, a.T, a.cfg, pad);
    f.set(f.x, test::to_f32(a.get(a.x)));
    f.set(f.wq, test::to_f32(a.get(a.wq)));
    f.set(f.wk, test::to_f32(a.get(a.wk)));
    f.set(f.wv, test::to_f32(a.get(a.wv)));
    f.set(f.wo, test::to_f32(a.get(a.wo)));
    return f;
}

// An independent, plain-loop forward: out[B, T, C], straight from the definition in
// attention.h, with RoPE angles computed per element.
std::vector<double> naive_forward(const Attn<double>& a) {
    const int64_t B = a.B, T = a.T, H = a.H, D = a.D, C = a.C;
    const auto x = a.get(a.x), wq = a.get(a.wq), wk = a.get(a.wk), wv = a.get(a.wv),
               wo = a.get(a.wo);
    auto project = [&](const std::vector<double>& w, bool rope) {
        std::vector<double> p(size_t(B * T * C));
        for (int64_t r = 0; r < B * T; ++r)
            for (int64_t o = 0; o < C; ++o) {
                double s = 0;
                for (int64_t c = 0; c < C; ++c) s += x[r * C + c] * w[o * C + c];
                p[r * C + o] = s;
            }
        if (!rope) return p;
        std::vector<double> rotated = p;
        for (int64_t r = 0; r < B * T; ++r)
            for (int64_t h = 0; h < H; ++h)
                for (int64_t i = 0; i < D / 2; ++i) {
                    const double angle =
                        double(r % T) * std::pow(a.cfg.rope_theta, -2.0 * double(i) / double(D));
                    const double x1 = p[r * C + h * D + i], x2 = p[r * C + h * D + i + D / 2];
                    rotated[r * C + h * D + i] = x1 * std::cos(angle) - x2 * std::sin(angle);
                    rotated[r * C + h * D + i + D / 2] =
                        x2 * std::cos(angle) + x1 * std::sin(angle);
                }
        return rotated;
    };
    const auto q = project(wq, a.cfg.rope), k = project(wk, a.cfg.rope), v = project(wv, false);
    std::vector<double> y(size_t(B * T * C), 0.0), out(size_t(B * T * C), 0.0);
    std::vector<double> s(static_cast<size_t>(T));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < T; ++i) {
                const int64_t keys = a.cfg.causal ? i + 1 : T;
                double m = -INFINITY, sum = 0;
                for (int64_t j = 0; j < keys; ++j) {
                    double dot = 0;
                    for (int64_t d = 0; d < D; ++d)
                        dot += q[(b * T + i) * C + h * D + d] * k[(b * T + j) * C + h * D + d];
                    s[j] = dot / std::sqrt(double(D));
                    m = std::max(m, s[j]);
                }
                for (int64_t j = 0; j < keys; ++j) sum += (s[j] = std::exp(s[j] - m));
                for (int64_t j = 0; j < keys; ++j)
                    for (int64_t d = 0; d < D; ++d)
                        y[(b * T + i) * C + h * D + d] +=
                            s[j] / sum * v[(b * T + j) * C + h * D + d];
            }
    for (int64_t r = 0; r < B * T; ++r)
        for (int64_t o = 0; o < C; ++o)
            for (int64_t c = 0; c < C; ++c) out[r * C + o] += y[r * C + c] * wo[o * C + c];
    return out;
}

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double e : v) m = std::max(m, std::abs(e));
    return m;
}

// Float against double: the error of a float gemm grows like sqrt(K) * eps * magnitude, and
// attention chains six of them, so the tolerance is relative to the largest element.
::testing::AssertionResult float_close(const std::vector<float>& got,
                                       const std::vector<double>& want, double rel) {
    return test::all_close(got, want, rel * std::max(1.0, max_abs(want)), rel);
}

// ---------------------------------------------------------------------------------------
// Finite differences.

struct FdCase {
    int64_t T;
    bool causal, rope;
};

void PrintTo(const FdCase& c, std::ostream* os) {
    *os << "T=" << c.T << " causal=" << c.causal << " rope=" << c.rope;
}

class AttentionFd : public ::testing::TestWithParam<FdCase> {};

TEST_P(AttentionFd, BackwardMatchesFiniteDifferencesAndAccumulates) {
    const auto [T, causal, rope] = GetParam();
    Attn<double> a(2, T, make_config(2, 4, causal, rope));
    fill_random(a, 10);
    const auto d_out = test::random_normal(size_t(a.N * a.C), 20);

    // Gradients start non-zero: backward must add to them.
    std::vector<std::vector<double>*> grads = {&a.d_x, &a.d_wq, &a.d_wk, &a.d_wv, &a.d_wo};
    std::vector<std::vector<double>> start;
    for (size_t i = 0; i < grads.size(); ++i) {
        *grads[i] = test::random_normal(grads[i]->size(), 30 + i);
        start.push_back(*grads[i]);
    }
    a.forward();
    a.backward(d_out);

    auto loss = [&] {
        a.forward();
        return test::weighted_sum(a.out, d_out);
    };
    const std::vector<std::vector<double>*> inputs = {&a.x, &a.wq, &a.wk, &a.wv, &a.wo};
    const char* names[] = {"d_x", "d_wq", "d_wk", "d_wv", "d_wo"};
    for (size_t i = 0; i < inputs.size(); ++i) {
        const auto numeric = test::numeric_gradient(loss, inputs[i]->data(), inputs[i]->size());
        std::vector<double> added(grads[i]->size());
        for (size_t j = 0; j < added.size(); ++j) added[j] = (*grads[i])[j] - start[i][j];
        // With T = 1 the softmax is the constant 1, so q and k get no gradient at all.
        if (T > 1 || i == 0 || i >= 3) {
            EXPECT_GT(max_abs(numeric), 1e-3) << names[i] << ": the check would be vacuous";
        }
        EXPECT_TRUE(test::all_close(added, numeric, 1e-7, 1e-6)) << names[i];
    }
}

INSTANTIATE_TEST_SUITE_P(SmallSizes, AttentionFd,
                         ::testing::Values(FdCase{5, true, true}, FdCase{5, true, false},
                                           FdCase{5, false, true}, FdCase{5, false, false},
                                           FdCase{1, true, true}, FdCase{1, false, false}),
                         [](const auto& info) {
                             return std::string(info.param.causal ? "Causal" : "Bidirectional") +
                                    (info.param.rope ? "Rope" : "NoRope") + "T" +
                                    std::to_string(info.param.T);
                         });

// ---------------------------------------------------------------------------------------
// Causality and the mask.

// Changes x at position t = 2 of batch 0 and reports, per position of that batch, whether the
// output changed; checks that batch 1 did not change at all.
std::vector<bool> changed_positions(bool causal, bool rope) {
    Attn<double> a(2, 5, make_config(2, 4, causal, rope));
    fill_random(a, 40);
    a.forward();
    const auto before = a.out;
    for (int64_t c = 0; c < a.C; ++c) a.x[2 * a.C + c] += 0.5;
    a.forward();
    std::vector<bool> changed;
    for (int64_t t = 0; t < a.T; ++t) {
        bool any = false;
        for (int64_t c = 0; c < a.C; ++c)
            any |= std::abs(a.out[t * a.C + c] - before[t * a.C + c]) > 1e-9;
        changed.push_back(any);
    }
    for (int64_t i = a.T * a.C; i < a.N * a.C; ++i) EXPECT_EQ(a.out[i], before[i]) << "batch 1";
    return changed;
}

TEST(Attention, CausalOutputsIgnoreLaterPositions) {
    for (bool rope : {false, true}) {
        EXPECT_EQ(changed_positions(true, rope),
                  (std::vector<bool>{false, false, true, true, true}))
            << "rope=" << rope;
    }
}

TEST(Attention, BidirectionalOutputsSeeEveryPosition) {
    for (bool rope : {false, true}) {
        EXPECT_EQ(changed_positions(false, rope), (std::vector<bool>{true, true, true, true, true}))
            << "rope=" << rope;
    }
}

TEST(Attention, CausalProbabilitiesAreExactlyZeroAboveTheDiagonal) {
    Attn<double> a(2, 70, make_config(2, 4, true, true));  // 70: two causal blocks
    fill_random(a, 50);
    a.forward();
    for (int64_t u = 0; u < a.B * a.H; ++u)
        for (int64_t i = 0; i < a.T; ++i) {
            const double* row = a.att.data() + (u * a.T + i) * a.T;
            double sum = 0;
            for (int64_t j = 0; j < a.T; ++j) {
                if (j > i) {
                    ASSERT_EQ(row[j], 0.0) << "unit " << u << " row " << i << " col " << j;
                }
                sum += row[j];
            }
            ASSERT_NEAR(sum, 1.0, 1e-12);
        }
}

// With d_out zero from position `cut` on, causal attention must give d_x exactly zero there:
// any non-zero value would have flowed backward through a masked entry. Scratch starts as
// NaN, so stale values in the skipped part of a block would show up too.
template <class R>
void expect_exact_zero_below_mask(Attn<R>& a, int64_t cut) {
    a.forward();
    auto d_out = test::random_normal(size_t(a.N * a.C), 60);
    for (int64_t b = 0; b < a.B; ++b)
        for (int64_t t = cut; t < a.T; ++t)
            for (int64_t c = 0; c < a.C; ++c) d_out[(b * a.T + t) * a.C + c] = 0;
    if constexpr (std::is_same_v<R, float>)
        a.backward(test::to_f32(d_out));
    else
        a.backward(d_out);
    const auto d_x = a.get(a.d_x);
    int64_t nonzero_before = 0;
    for (int64_t b = 0; b < a.B; ++b)
        for (int64_t t = 0; t < a.T; ++t)
            for (int64_t c = 0; c < a.C; ++c) {
                const R g = d_x[(b * a.T + t) * a.C + c];
                if (t >= cut) {
                    ASSERT_EQ(g, R(0)) << "b=" << b << " t=" << t << " c=" << c;
                } else {
                    nonzero_before += g != R(0);
                }
            }
    EXPECT_GT(nonzero_before, 0);
}

TEST(Attention, CausalBackwardSendsExactlyZeroThroughTheMask) {
    for (bool rope : {false, true}) {
        Attn<double> small(2, 5, make_config(2, 4, true, rope));
        fill_random(small, 70);
        expect_exact_zero_below_mask(small, 3);

        Attn<double> big(2, 150, make_config(2, 4, true, rope));
        fill_random(big, 71);
        auto f = to_float(big, 1);
        expect_exact_zero_below_mask(f, 100);

        Attn<double> seq(1, 1030, make_config(2, 4, true, rope));  // T > 1024: heads in turn
        fill_random(seq, 72);
        auto fs = to_float(seq, 0);
        expect_exact_zero_below_mask(fs, 600);
    }
}

// ---------------------------------------------------------------------------------------
// PyTorch fixture.

class AttentionFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(AttentionFixture, MatchesPyTorchInDoubleAndFloat) {
    const std::string p = GetParam() + ".";
    const bool causal = GetParam() == "causal_rope";
    test::Fixture fx("attention");
    const auto sizes = fx.get_int("sizes");
    const int64_t B = sizes[0], T = sizes[1], H = sizes[2], D = sizes[3];
    Attn<double> a(B, T, make_config(H, D, causal, causal));
    a.x = fx.get(p + "x");
    a.wq = fx.get(p + "wq");
    a.wk = fx.get(p + "wk");
    a.wv = fx.get(p + "wv");
    a.wo = fx.get(p + "wo");
    const auto d_out = fx.get(p + "d_out");

    a.forward();
    a.backward(d_out);
    EXPECT_TRUE(test::all_close(a.out, fx.get(p + "out"), 1e-12, 1e-10)) << "out";
    EXPECT_TRUE(test::all_close(a.q, fx.get(p + "q"), 1e-12, 1e-10)) << "q";
    EXPECT_TRUE(test::all_close(a.k, fx.get(p + "k"), 1e-12, 1e-10)) << "k";
    EXPECT_TRUE(test::all_close(a.v, fx.get(p + "v"), 1e-12, 1e-10)) << "v";
    EXPECT_TRUE(test::all_close(a.att, fx.get(p + "att"), 1e-12, 1e-10)) << "att";
    EXPECT_TRUE(test::all_close(a.y, fx.get(p + "y"), 1e-12, 1e-10)) << "y";
    EXPECT_TRUE(test::all_close(a.d_x, fx.get(p + "d_x"), 1e-11, 1e-10)) << "d_x";
    EXPECT_TRUE(test::all_close(a.d_wq, fx.get(p + "d_wq"), 1e-11, 1e-10)) << "d_wq";
    EXPECT_TRUE(test::all_close(a.d_wk, fx.get(p + "d_wk"), 1e-11, 1e-10)) << "d_wk";
    EXPECT_TRUE(test::all_close(a.d_wv, fx.get(p + "d_wv"), 1e-11, 1e-10)) << "d_wv";
    EXPECT_TRUE(test::all_close(a.d_wo, fx.get(p + "d_wo"), 1e-11, 1e-10)) << "d_wo";

    // The float path on the same data, misaligned by one element.
    auto f = to_float(a, 1);
    f.forward();
    f.backward(test::to_f32(d_out));
    EXPECT_TRUE(float_close(f.get(f.out), fx.get(p + "out"), 5e-6)) << "float out";
    EXPECT_TRUE(float_close(f.get(f.att), fx.get(p + "att"), 5e-6)) << "float att";
    EXPECT_TRUE(float_close(f.get(f.d_x), fx.get(p + "d_x"), 5e-6)) << "float d_x";
    EXPECT_TRUE(float_close(f.get(f.d_wq), fx.get(p + "d_wq"), 5e-6)) << "float d_wq";
    EXPECT_TRUE(float_close(f.get(f.d_wk), fx.get(p + "d_wk"), 5e-6)) << "float d_wk";
    EXPECT_TRUE(float_close(f.get(f.d_wv), fx.get(p + "d_wv"), 5e-6)) << "float d_wv";
    EXPECT_TRUE(float_close(f.get(f.d_wo), fx.get(p + "d_wo"), 5e-6)) << "float d_wo";
}

INSTANTIATE_TEST_SUITE_P(PyTorch, AttentionFixture,
                         ::testing::Values(std::string("causal_rope"), std::string("bidir")),
                         [](const auto& info) { return info.param; });

// ---------------------------------------------------------------------------------------
// Larger sizes: the double path against the plain-loop forward and directional finite
// differences, and the float path against the double path.

struct LargeCase {
    int64_t B, T, H, D;
    bool causal, rope;
};

void PrintTo(const LargeCase& c, std::ostream* os) {
    *os << "B=" << c.B << " T=" << c.T << " H=" << c.H << " D=" << c.D << " causal=" << c.causal
        << " rope=" << c.rope;
}

class AttentionLarge : public ::testing::TestWithParam<LargeCase> {};

TEST_P(AttentionLarge, FloatMatchesDoubleAndDoubleMatchesDefinition) {
    const auto [B, T, H, D, causal, rope] = GetParam();
    Attn<double> a(B, T, make_config(H, D, causal, rope));
    fill_random(a, 80);
    const auto d_out = test::random_normal(size_t(a.N * a.C), 81);
    a.forward();
    EXPECT_TRUE(test::all_close(a.out, naive_forward(a), 1e-11, 1e-9)) << "double out";
    a.backward(d_out);

    // Directional derivative along a random direction of all inputs at once: two forwards
    // check every gradient together, where elementwise differences would cost thousands.
    std::vector<std::vector<double>*> inputs = {&a.x, &a.wq, &a.wk, &a.wv, &a.wo};
    std::vector<std::vector<double>*> grads = {&a.d_x, &a.d_wq, &a.d_wk, &a.d_wv, &a.d_wo};
    std::vector<std::vector<double>> dirs;
    double analytic = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
        dirs.push_back(test::random_normal(inputs[i]->size(), 90 + i));
        for (size_t j = 0; j < dirs[i].size(); ++j) analytic += dirs[i][j] * (*grads[i])[j];
    }
    auto loss_at = [&](double h) {
        for (size_t i = 0; i < inputs.size(); ++i)
            for (size_t j = 0; j < dirs[i].size(); ++j) (*inputs[i])[j] += h * dirs[i][j];
        a.forward();
        const double l = test::weighted_sum(a.out, d_out);
        for (size_t i = 0; i < inputs.size(); ++i)
            for (size_t j = 0; j < dirs[i].size(); ++j) (*inputs[i])[j] -= h * dirs[i][j];
        return l;
    };
    const double h = 1e-5, numeric = (loss_at(h) - loss_at(-h)) / (2 * h);
    EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)));

    a.forward();  // restore the saved buffers of the unperturbed inputs
    auto f = to_float(a, 3);
    f.forward();
    f.backward(test::to_f32(d_out));
    EXPECT_TRUE(float_close(f.get(f.out), a.out, 1e-5)) << "out";
    EXPECT_TRUE(float_close(f.get(f.att), a.att, 1e-5)) << "att";
    EXPECT_TRUE(float_close(f.get(f.d_x), a.d_x, 1e-5)) << "d_x";
    EXPECT_TRUE(float_close(f.get(f.d_wq), a.d_wq, 1e-5)) << "d_wq";
    EXPECT_TRUE(float_close(f.get(f.d_wk), a.d_wk, 1e-5)) << "d_wk";
    EXPECT_TRUE(float_close(f.get(f.d_wv), a.d_wv, 1e-5)) << "d_wv";
    EXPECT_TRUE(float_close(f.get(f.d_wo), a.d_wo, 1e-5)) << "d_wo";
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, AttentionLarge,
    ::testing::Values(LargeCase{2, 64, 4, 16, true, true}, LargeCase{2, 64, 4, 16, true, false},
                      LargeCase{2, 64, 4, 16, false, true}, LargeCase{2, 64, 4, 16, false, false},
                      // T = 150: three causal blocks, the last one partial.
                      LargeCase{2, 150, 2, 8, true, true},
                      // T > 1024: heads one after another, threaded gemms, softmax and fills.
                      LargeCase{1, 1030, 2, 4, true, true}, LargeCase{1, 1030, 2, 4, false, false}),
    [](const auto& info) {
        const auto& c = info.param;
        return "B" + std::to_string(c.B) + "T" + std::to_string(c.T) + "H" + std::to_string(c.H) +
               "D" + std::to_string(c.D) + (c.causal ? "Causal" : "Bidirectional") +
               (c.rope ? "Rope" : "NoRope");
    });

// ---------------------------------------------------------------------------------------
// Arguments.

TEST(Attention, RejectsBadArguments) {
    EXPECT_THROW(nn::attention_scratch_size(2, 4, make_config(2, 3, true, true)), Error);  // odd D
    EXPECT_NO_THROW(nn::attention_scratch_size(2, 4, make_config(2, 3, true, false)));
    EXPECT_THROW(nn::attention_scratch_size(0, 4, make_config(2, 4, true, true)), Error);
    EXPECT_THROW(nn::attention_scratch_size(2, 4, make_config(0, 4, true, true)), Error);
    Attn<double> a(1, 2, make_config(1, 4, true, true));
    EXPECT_THROW(nn::attention_forward(a.x.data(), a.saved(), a.x.data(), a.wq.data(), a.wk.data(),
                                       a.wv.data(), a.wo.data(), 1, 2, a.cfg),
                 Error);  // out aliases x
}

TEST(Attention, OddHeadDimWithoutRopeWorks) {
    Attn<double> a(1, 6, make_config(2, 3, true, false));
    fill_random(a, 100);
    a.forward();
    EXPECT_TRUE(test::all_close(a.out, naive_forward(a), 1e-12, 1e-10));
}

}  // namespace
}  // namespace moe
