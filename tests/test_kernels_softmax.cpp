// softmax: the vectorised float path against the reference on awkward and misaligned shapes,
// the probability invariants (rows sum to 1, no overflow at 1e4, -inf gives 0), the backward
// by finite differences, and forward + backward against PyTorch.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/softmax.h"
#include "test_support.h"

namespace moe {
namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();  // 1.19e-7
constexpr float kInf = std::numeric_limits<float>::infinity();

// Copies v one element past the start of a fresh buffer, so rows start at a 4-byte offset
// from every vector boundary; data() is the misaligned pointer.
struct Misaligned {
    explicit Misaligned(const std::vector<float>& v) : buf(v.size() + 1) {
        std::copy(v.begin(), v.end(), buf.begin() + 1);
    }
    float* data() { return buf.data() + 1; }
    std::vector<float> values() const { return {buf.begin() + 1, buf.end()}; }
    std::vector<float> buf;
};

// y[rows, C] against y_ref with a per-element relative tolerance 4 eps (2 + |x - rowmax|):
// float's x - max is rounded by eps/2 |x - max|, and exp turns that absolute error into a
// relative one (the reference subtracts in double, exactly).
::testing::AssertionResult softmax_close(const std::vector<float>& y,
                                         const std::vector<float>& y_ref,
                                         const std::vector<float>& x, int64_t rows, int64_t C) {
    int64_t failures = 0, worst = -1;
    double worst_excess = 0;
    for (int64_t r = 0; r < rows; ++r) {
        float m = x[size_t(r * C)];
        for (int64_t j = 0; j < C; ++j) m = std::max(m, x[size_t(r * C + j)]);
        for (int64_t j = 0; j < C; ++j) {
            const size_t i = size_t(r * C + j);
            const double spread = std::isinf(x[i]) ? 0.0 : std::fabs(double(x[i]) - m);
            const double tol = 4 * kEps * (2 + spread) * std::fabs(double(y_ref[i])) + 1e-37;
            const double err = std::fabs(double(y[i]) - double(y_ref[i]));
            if (!(err <= tol)) {
                ++failures;
                if (worst < 0 || err - tol > worst_excess)
                    worst_excess = err - tol, worst = int64_t(i);
            }
        }
    }
    if (failures == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << failures << " elements differ; worst at [" << worst << "]: " << y[size_t(worst)]
           << " vs " << y_ref[size_t(worst)] << " (x=" << x[size_t(worst)] << ")";
}

struct Shape2 {
    int64_t rows, C;
};

class SoftmaxSweep : public ::testing::TestWithParam<Shape2> {};

TEST_P(SoftmaxSweep, ForwardMatchesReferenceAndRowsSumToOne) {
    const auto [rows, C] = GetParam();
    const auto x = test::random_normal_f32(size_t(rows * C), 11, 3.0f);
    Misaligned xm(x), y(std::vector<float>(x.size(), NAN));
    std::vector<float> y_ref(x.size());
    kernels::softmax_forward(y.data(), xm.data(), rows, C);
    kernels::softmax_forward_reference(y_ref.data(), x.data(), rows, C);
    EXPECT_TRUE(softmax_close(y.values(), y_ref, x, rows, C)) << rows << "x" << C;
    const auto got = y.values();
    for (int64_t r = 0; r < rows; ++r) {
        double s = 0;
        for (int64_t j = 0; j < C; ++j) s += got[size_t(r * C + j)];
        ASSERT_NEAR(s, 1.0, 4 * kEps * (1 + std::sqrt(double(C)))) << "row " << r;
    }
}

TEST_P(SoftmaxSweep, BackwardMatchesReferenceAndAccumulates) {
    const auto [rows, C] = GetParam();
    const auto x = test::random_normal_f32(size_t(rows * C), 12, 2.0f);
    const auto dy = test::random_normal_f32(x.size(), 13);
    const auto dx0 = test::random_normal_f32(x.size(), 14);  // backward must add to this
    std::vector<float> y(x.size());
    kernels::softmax_forward_reference(y.data(), x.data(), rows, C);
    Misaligned dym(dy), ym(y), dx(dx0);
    auto dx_ref = dx0;
    kernels::softmax_backward(dx.data(), dym.data(), ym.data(), rows, C);
    kernels::softmax_backward_reference(dx_ref.data(), dy.data(), y.data(), rows, C);
    // |dx - dx0| <= y * (|dy| + |dot|) ~ y * 4; absolute error a few eps of dx0's scale.
    EXPECT_TRUE(test::all_close(dx.values(), dx_ref, 8 * kEps, 8 * kEps)) << rows << "x" << C;
}

INSTANTIATE_TEST_SUITE_P(AwkwardSizes, SoftmaxSweep,
                         ::testing::Values(Shape2{1, 1}, Shape2{1, 1000}, Shape2{3, 7},
                                           Shape2{7, 17}, Shape2{17, 64}, Shape2{64, 3},
                                           Shape2{1000, 7}, Shape2{3, 1000}, Shape2{64, 1000},
                                           Shape2{1000, 1000}));

TEST(Softmax, InPlaceMatchesOutOfPlace) {
    const int64_t rows = 17, C = 64;
    auto x = test::random_normal_f32(size_t(rows * C), 15);
    std::vector<float> y(x.size());
    kernels::softmax_forward(y.data(), x.data(), rows, C);
    kernels::softmax_forward(x.data(), x.data(), rows, C);
    EXPECT_EQ(x, y);
}

TEST(Softmax, LargeLogitsDoNotOverflow) {
    const int64_t rows = 7, C = 33;
    const auto x = test::random_normal_f32(size_t(rows * C), 16, 1e4f);
    std::vector<float> y(x.size());
    std::vector<double> y_ref(x.size());
    kernels::softmax_forward(y.data(), x.data(), rows, C);
    kernels::softmax_forward(y_ref.data(), test::to_f64(x).data(), rows, C);
    for (float v : y) ASSERT_TRUE(std::isfinite(v) && v >= 0 && v <= 1) << v;
    // Logit gaps are ~1e4: each row is one-hot up to exp(-gap), and must say so exactly.
    EXPECT_TRUE(test::all_close(y, y_ref, 1e-30, 8 * kEps));
    for (int64_t r = 0; r < rows; ++r) {
        double s = 0;
        for (int64_t j = 0; j < C; ++j) s += y[size_t(r * C + j)];
        EXPECT_NEAR(s, 1.0, 4 * kEps);
    }
}

TEST(Softmax, MinusInfinityGivesZeroProbabilityAndZeroGradient) {
    // A causal mask: row r sees columns 0..r; above the diagonal is -inf.
    const int64_t rows = 9, C = 9;
    auto x = test::random_normal_f32(size_t(rows * C), 17);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = r + 1; j < C; ++j) x[size_t(r * C + j)] = -kInf;
    std::vector<float> y(x.size()), y_ref(x.size());
    kernels::softmax_forward(y.data(), x.data(), rows, C);
    kernels::softmax_forward_reference(y_ref.data(), x.data(), rows, C);
    EXPECT_TRUE(softmax_close(y, y_ref, x, rows, C));
    EXPECT_EQ(y[0], 1.0f);  // row 0 has a single visible column
    for (int64_t r = 0; r < rows; ++r) {
        double s = 0;
        for (int64_t j = 0; j < C; ++j) {
            const float v = y[size_t(r * C + j)];
            if (j > r) {
                EXPECT_EQ(v, 0.0f) << r << "," << j;
            } else {
                EXPECT_GT(v, 0.0f) << r << "," << j;
            }
            s += v;
        }
        EXPECT_NEAR(s, 1.0, 4 * kEps);
    }
    const auto dy = test::random_normal_f32(x.size(), 18);
    std::vector<float> dx(x.size(), 0.0f);
    kernels::softmax_backward(dx.data(), dy.data(), y.data(), rows, C);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = r + 1; j < C; ++j) EXPECT_EQ(dx[size_t(r * C + j)], 0.0f);
    EXPECT_EQ(dx[0], 0.0f);  // a one-hot row has no gradient
}

TEST(Softmax, BackwardMatchesFiniteDifferences) {
    const int64_t rows = 4, C = 7;
    auto x = test::random_normal(size_t(rows * C), 19, 2.0);
    const auto w = test::random_normal(x.size(), 20);  // d loss / d y
    std::vector<double> y(x.size());
    auto loss = [&] {
        kernels::softmax_forward(y.data(), x.data(), rows, C);
        return test::weighted_sum(y, w);
    };
    const auto numeric = test::numeric_gradient(loss, x.data(), x.size());
    loss();
    std::vector<double> dx(x.size(), 0.0);
    kernels::softmax_backward(dx.data(), w.data(), y.data(), rows, C);
    EXPECT_TRUE(test::all_close(dx, numeric, 1e-8, 1e-6));
}

TEST(Softmax, MatchesPyTorch) {
    test::Fixture f("softmax");
    const auto shape = f.shape("x");
    const int64_t rows = shape[0], C = shape[1];
    const auto x = f.get("x"), dy = f.get("dy"), y_want = f.get("y"), dx_want = f.get("dx");
    // Backward accumulates: start from ones and expect 1 + dx.
    std::vector<double> dx_plus_one(dx_want);
    for (auto& v : dx_plus_one) v += 1.0;

    std::vector<double> y(x.size()), dx(x.size(), 1.0);
    kernels::softmax_forward(y.data(), x.data(), rows, C);
    kernels::softmax_backward(dx.data(), dy.data(), y.data(), rows, C);
    EXPECT_TRUE(test::all_close(y, y_want, 1e-15, 1e-13));
    EXPECT_TRUE(test::all_close(dx, dx_plus_one, 1e-14, 1e-13));

    std::vector<float> yf(x.size()), dxf(x.size(), 1.0f);
    kernels::softmax_forward(yf.data(), test::to_f32(x).data(), rows, C);
    kernels::softmax_backward(dxf.data(), test::to_f32(dy).data(), yf.data(), rows, C);
    EXPECT_TRUE(test::all_close(yf, y_want, 1e-30, 16 * kEps));
    EXPECT_TRUE(test::all_close(dxf, dx_plus_one, 16 * kEps, 16 * kEps));
}

TEST(Softmax, RejectsEmptyRows) {
    std::vector<float> x(4), y(4);
    EXPECT_THROW(kernels::softmax_forward(y.data(), x.data(), 4, 0), Error);
    EXPECT_THROW(kernels::softmax_backward(y.data(), x.data(), x.data(), -1, 4), Error);
}

}  // namespace
}  // namespace moe
