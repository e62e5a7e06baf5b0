// Elementwise kernels: the vectorised float path against the reference on awkward and
// misaligned sizes, reductions accurate to double and identical run to run, and the bf16
// conversion bit for bit against moe::f32_to_bf16 (ties to even, NaN stays NaN).
#include <bit>
#include <cmath>
#include <limits>

#include "core/dtype.h"
#include "core/rng.h"
#include "kernels/elementwise.h"
#include "test_support.h"

namespace moe {
namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();  // 1.19e-7

// v copied one element past the start of a fresh buffer: data() is misaligned.
template <class T>
struct Misaligned {
    explicit Misaligned(const std::vector<T>& v) : buf(v.size() + 1) {
        std::copy(v.begin(), v.end(), buf.begin() + 1);
    }
    T* data() { return buf.data() + 1; }
    std::vector<T> values() const { return {buf.begin() + 1, buf.end()}; }
    std::vector<T> buf;
};

float from_bits(uint32_t b) {
    return std::bit_cast<float>(b);
}

class ElementwiseSweep : public ::testing::TestWithParam<int64_t> {};

TEST_P(ElementwiseSweep, ArithmeticMatchesReference) {
    const int64_t n = GetParam();
    const auto a = test::random_normal_f32(size_t(n), 1), b = test::random_normal_f32(size_t(n), 2);
    Misaligned<float> am(a), bm(b);
    // Each output is one rounded IEEE operation in both paths: bit-identical.
    {
        Misaligned<float> y(std::vector<float>(a.size(), NAN));
        std::vector<float> y_ref(a.size());
        kernels::add(y.data(), am.data(), bm.data(), n);
        kernels::add_reference(y_ref.data(), a.data(), b.data(), n);
        EXPECT_EQ(y.values(), y_ref) << "add n=" << n;
        kernels::mul(y.data(), am.data(), bm.data(), n);
        kernels::mul_reference(y_ref.data(), a.data(), b.data(), n);
        EXPECT_EQ(y.values(), y_ref) << "mul n=" << n;
    }
    {
        Misaligned<float> y(a);
        auto y_ref = a;
        kernels::scale(y.data(), -0.37f, n);
        kernels::scale_reference(y_ref.data(), -0.37f, n);
        EXPECT_EQ(y.values(), y_ref) << "scale n=" << n;
        // y + alpha * x may or may not be fused into one rounding: allow 1 ulp of each term.
        kernels::axpy(y.data(), 1.7f, bm.data(), n);
        kernels::axpy_reference(y_ref.data(), 1.7f, b.data(), n);
        EXPECT_TRUE(test::all_close(y.values(), y_ref, 4 * kEps, 2 * kEps)) << "axpy n=" << n;
    }
}

TEST_P(ElementwiseSweep, InPlaceArithmetic) {
    const int64_t n = GetParam();
    const auto a = test::random_normal_f32(size_t(n), 3), b = test::random_normal_f32(size_t(n), 4);
    std::vector<float> want(a.size());
    kernels::add_reference(want.data(), a.data(), b.data(), n);
    auto y = a;
    kernels::add(y.data(), y.data(), b.data(), n);  // y aliases a
    EXPECT_EQ(y, want);
    kernels::mul_reference(want.data(), a.data(), b.data(), n);
    y = b;
    kernels::mul(y.data(), a.data(), y.data(), n);  // y aliases b
    EXPECT_EQ(y, want);
}

TEST_P(ElementwiseSweep, ReductionsMatchReference) {
    const int64_t n = GetParam();
    const auto x = test::random_normal_f32(size_t(n), 5, 10.0f);
    Misaligned<float> xm(x);
    // Both accumulate in double; only the order differs. |error| <= n * 2^-53 * sum |x_i|.
    double abs_sum = 0;
    for (float v : x) abs_sum += std::fabs(double(v));
    const double tol = double(n) * 1.2e-16 * abs_sum;
    EXPECT_NEAR(kernels::sum(xm.data(), n), kernels::sum_reference(x.data(), n), tol);
    EXPECT_NEAR(kernels::sum_squares(xm.data(), n), kernels::sum_squares_reference(x.data(), n),
                double(n) * 1.2e-16 * kernels::sum_squares_reference(x.data(), n));
    EXPECT_EQ(kernels::max(xm.data(), n), kernels::max_reference(x.data(), n));
    // All-negative input: the max must not come from a zero-initialised accumulator.
    auto neg = x;
    for (auto& v : neg) v = -std::fabs(v) - 1.0f;
    Misaligned<float> negm(neg);
    EXPECT_EQ(kernels::max(negm.data(), n), kernels::max_reference(neg.data(), n));
    EXPECT_LE(kernels::max(negm.data(), n), -1.0f);
}

TEST_P(ElementwiseSweep, Bf16MatchesScalarConversionBitForBit) {
    const int64_t n = GetParam();
    Rng rng(static_cast<uint64_t>(n));
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = from_bits(uint32_t(rng.next_u64()));  // any pattern: NaN, inf, denormal
    Misaligned<float> xm(x);
    Misaligned<uint16_t> h(std::vector<uint16_t>(x.size()));
    std::vector<uint16_t> h_ref(x.size());
    kernels::f32_to_bf16(h.data(), xm.data(), n);
    kernels::f32_to_bf16_reference(h_ref.data(), x.data(), n);
    EXPECT_EQ(h.values(), h_ref);
    Misaligned<float> back(std::vector<float>(x.size()));
    std::vector<float> back_ref(x.size());
    kernels::bf16_to_f32(back.data(), h.data(), n);
    kernels::bf16_to_f32_reference(back_ref.data(), h_ref.data(), n);
    const auto got = back.values();
    for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(back_ref[i])) << i;
}

INSTANTIATE_TEST_SUITE_P(AwkwardSizes, ElementwiseSweep,
                         ::testing::Values(1, 3, 7, 17, 64, 1000, 100003));

class ArgmaxSweep : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(ArgmaxSweep, MatchesReference) {
    const auto [rows, C] = GetParam();
    auto x = test::random_normal_f32(size_t(rows * C), 6);
    // Quantise to a few values so most rows have ties for the max: the first index must win.
    for (auto& v : x) v = std::round(v);
    Misaligned<float> xm(x);
    Misaligned<int32_t> out(std::vector<int32_t>(size_t(rows), -1));
    std::vector<int32_t> out_ref(static_cast<size_t>(rows));
    kernels::argmax_rows(out.data(), xm.data(), rows, C);
    kernels::argmax_rows_reference(out_ref.data(), x.data(), rows, C);
    EXPECT_EQ(out.values(), out_ref);
}

INSTANTIATE_TEST_SUITE_P(AwkwardSizes, ArgmaxSweep,
                         ::testing::Values(std::pair<int64_t, int64_t>{1, 1},
                                           std::pair<int64_t, int64_t>{3, 7},
                                           std::pair<int64_t, int64_t>{7, 17},
                                           std::pair<int64_t, int64_t>{64, 3},
                                           std::pair<int64_t, int64_t>{17, 1000},
                                           std::pair<int64_t, int64_t>{1000, 64}));

TEST(Argmax, FirstIndexWinsTiesAndNegativeRowsWork) {
    const std::vector<float> x = {1,  3,  3,  2,   // tie: 1
                                  -5, -2, -9, -2,  // all negative, tie: 1
                                  0,  0,  0,  0,   // all equal: 0
                                  1,  2,  3,  4};  // last: 3
    std::vector<int32_t> out(4);
    kernels::argmax_rows(out.data(), x.data(), 4, 4);
    EXPECT_EQ(out, (std::vector<int32_t>{1, 1, 0, 3}));
}

TEST(Sum, MillionValuesMatchDoubleAndRepeatExactly) {
    // Positive values (no cancellation), so 1e-12 relative is meaningful: a float accumulator
    // would be off by ~1e-4, a double one by ~1e-13.
    const int64_t n = 1000000;
    Rng rng(42);
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = float(rng.uniform()) + 0.5f;
    long double want = 0, want_sq = 0;  // 64-bit mantissa: the truth to ~1e-16
    for (float v : x) want += v, want_sq += (long double)v * v;
    const double s1 = kernels::sum(x.data(), n), s2 = kernels::sum(x.data(), n);
    EXPECT_NEAR(s1, double(want), 1e-12 * double(want));
    EXPECT_EQ(std::bit_cast<uint64_t>(s1), std::bit_cast<uint64_t>(s2));
    const double q1 = kernels::sum_squares(x.data(), n), q2 = kernels::sum_squares(x.data(), n);
    EXPECT_NEAR(q1, double(want_sq), 1e-12 * double(want_sq));
    EXPECT_EQ(std::bit_cast<uint64_t>(q1), std::bit_cast<uint64_t>(q2));
    EXPECT_NEAR(kernels::sum(test::to_f64(x).data(), n), double(want), 1e-12 * double(want));
}

TEST(Bf16, RoundsToNearestEven) {
    struct Case {
        uint32_t f32, bf16;
    };
    const Case cases[] = {
        {0x3F800000u, 0x3F80u},  // 1.0 exact
        {0x3F807FFFu, 0x3F80u},  // below half: down
        {0x3F808000u, 0x3F80u},  // tie, 0x3F80 even: down
        {0x3F808001u, 0x3F81u},  // above half: up
        {0x3F818000u, 0x3F82u},  // tie, 0x3F81 odd: up to even
        {0xBF818000u, 0xBF82u},  // same for negatives
        {0x7F7F8000u, 0x7F80u},  // tie at the top rounds up to +inf
        {0x7F800000u, 0x7F80u},  // +inf
        {0xFF800000u, 0xFF80u},  // -inf
        {0x80000000u, 0x8000u},  // -0 keeps its sign
        {0x00008000u, 0x0000u},  // denormal tie to even zero
        {0x00018000u, 0x0002u},  // denormal tie up to even
    };
    for (const auto& c : cases) {
        uint16_t got = 0, got_ref = 0;
        const float x = from_bits(c.f32);
        kernels::f32_to_bf16(&got, &x, 1);
        kernels::f32_to_bf16_reference(&got_ref, &x, 1);
        EXPECT_EQ(got, c.bf16) << std::hex << c.f32;
        EXPECT_EQ(got_ref, c.bf16) << std::hex << c.f32;
        EXPECT_EQ(moe::f32_to_bf16(x), c.bf16) << std::hex << c.f32;
    }
}

TEST(Bf16, NaNStaysNaN) {
    // Quiet and signalling NaNs of both signs; one whose mantissa lives only in the low 16
    // bits, which plain truncation would turn into infinity.
    const std::vector<float> x = {from_bits(0x7FC00000u), from_bits(0xFFC00000u),
                                  from_bits(0x7F800001u), from_bits(0xFF800001u),
                                  from_bits(0x7FBFFFFFu), std::nanf("")};
    std::vector<uint16_t> h(x.size());
    std::vector<float> back(x.size());
    kernels::f32_to_bf16(h.data(), x.data(), int64_t(x.size()));
    kernels::bf16_to_f32(back.data(), h.data(), int64_t(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
        EXPECT_TRUE(std::isnan(back[i])) << i;
        EXPECT_EQ(std::signbit(back[i]), std::signbit(x[i])) << i;
        EXPECT_EQ(h[i], moe::f32_to_bf16(x[i])) << i;
    }
}

TEST(Bf16, EveryNonNaNBf16RoundTripsExactly) {
    std::vector<uint16_t> all(65536);
    for (uint32_t i = 0; i < 65536; ++i) all[i] = uint16_t(i);
    std::vector<float> f(all.size()), f_ref(all.size());
    std::vector<uint16_t> back(all.size());
    kernels::bf16_to_f32(f.data(), all.data(), 65536);
    kernels::bf16_to_f32_reference(f_ref.data(), all.data(), 65536);
    kernels::f32_to_bf16(back.data(), f.data(), 65536);
    for (uint32_t i = 0; i < 65536; ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(f[i]), i << 16) << i;
        ASSERT_EQ(std::bit_cast<uint32_t>(f_ref[i]), i << 16) << i;
        if (std::isnan(f[i])) {
            EXPECT_TRUE(std::isnan(moe::bf16_to_f32(back[i]))) << i;
        } else {
            ASSERT_EQ(back[i], all[i]) << i;
        }
    }
}

TEST(Bf16, EveryHighHalfWithAwkwardLowHalvesMatchesReference) {
    // All 65536 sign/exponent/high-mantissa patterns, each with the low halves that decide
    // rounding: 0, 1, just below / at / just above the tie, all ones.
    const uint32_t lows[] = {0x0000u, 0x0001u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu};
    std::vector<float> x;
    for (uint32_t hi = 0; hi < 65536; ++hi)
        for (uint32_t lo : lows) x.push_back(from_bits(hi << 16 | lo));
    std::vector<uint16_t> h(x.size()), h_ref(x.size());
    kernels::f32_to_bf16(h.data(), x.data(), int64_t(x.size()));
    kernels::f32_to_bf16_reference(h_ref.data(), x.data(), int64_t(x.size()));
    ASSERT_EQ(h, h_ref);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(h[i], moe::f32_to_bf16(x[i])) << i;
}

TEST(Elementwise, RejectsBadSizes) {
    std::vector<float> v(4);
    EXPECT_THROW(kernels::add(v.data(), v.data(), v.data(), -1), Error);
    EXPECT_THROW(kernels::max(v.data(), 0), Error);
    std::vector<int32_t> out(4);
    EXPECT_THROW(kernels::argmax_rows(out.data(), v.data(), 4, 0), Error);
}

}  // namespace
}  // namespace moe
