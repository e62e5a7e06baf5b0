// Dispatch and combine: a hand case, the backward of both by central finite differences in
// double (with a dropped token and an empty expert), accumulation, the float path against
// double at a size that runs in parallel, offset pointers, and bit-identical results for
// 1 and 2 threads.
#include <cmath>
#include <numeric>

#include "core/rng.h"
#include "core/threads.h"
#include "moe/dispatch.h"
#include "test_support.h"

namespace moe::sparse {
namespace {

// A plan built from token-major choices, with its own storage.
template <class R>
struct Plan {
    std::vector<int64_t> offsets, token_offsets, scratch;
    std::vector<int32_t> row_token, row_choice, token_rows;
    std::vector<R> row_weight;
    RoutingPlan<R> p;

    Plan(const std::vector<int32_t>& expert, const std::vector<R>& weight, int64_t T, int64_t k,
         int64_t E, int64_t capacity = -1) {
        const int64_t n = T * k;
        offsets.resize(size_t(E + 1));
        token_offsets.resize(size_t(T + 1));
        scratch.resize(size_t(E + n));
        row_token.resize(size_t(n));
        row_choice.resize(size_t(n));
        token_rows.resize(size_t(n));
        row_weight.resize(size_t(n));
        p.max_rows = n;
        p.offsets = offsets.data();
        p.row_token = row_token.data();
        p.row_choice = row_choice.data();
        p.row_weight = row_weight.data();
        p.token_offsets = token_offsets.data();
        p.token_rows = token_rows.data();
        Choices<R> ch{T, k, expert.data(), weight.data(), nullptr};
        build_plan_from_choices(p, ch, E, capacity, scratch.data());
    }
};

// Random distinct experts per token.
std::vector<int32_t> random_experts(int64_t T, int64_t E, int64_t k, uint64_t seed) {
    Rng rng(seed);
    std::vector<int32_t> out, perm(static_cast<size_t>(E));
    for (int64_t t = 0; t < T; ++t) {
        std::iota(perm.begin(), perm.end(), 0);
        for (int64_t i = E - 1; i > 0; --i)
            std::swap(perm[size_t(i)], perm[rng.below(uint64_t(i + 1))]);
        out.insert(out.end(), perm.begin(), perm.begin() + k);
    }
    return out;
}

TEST(MoeDispatch, HandCase) {
    // T=3, k=2, E=3, d=2. Token 0: experts 1, 0; token 1: 1, 2; token 2: 0, 2 with capacity
    // 1 per expert: expert 0 keeps token 0, expert 1 token 0, expert 2 token 1 (position).
    const std::vector<int32_t> ex = {1, 0, 1, 2, 0, 2};
    const std::vector<double> w = {0.5, 0.25, 2.0, 3.0, 4.0, 5.0};
    Plan<double> pl(ex, w, 3, 2, 3, 1);
    ASSERT_EQ(pl.p.rows(), 3);
    const std::vector<double> x = {1, 2, 3, 4, 5, 6};
    std::vector<double> xs(6);
    dispatch_forward(xs.data(), x.data(), pl.p, 2);
    EXPECT_EQ(xs, (std::vector<double>{1, 2, 1, 2, 3, 4}));  // rows: (e0,t0) (e1,t0) (e2,t1)
    const std::vector<double> ys = {10, 20, 30, 40, 50, 60};
    std::vector<double> out(6, NAN);
    combine_forward(out.data(), ys.data(), pl.p, 2);
    // Token 0: 0.25 * [10, 20] + 0.5 * [30, 40]; token 1: 3 * [50, 60]; token 2: all dropped.
    EXPECT_EQ(out, (std::vector<double>{17.5, 25, 150, 180, 0, 0}));
}

// Loss = sum(w_out * combine(ys, row_weight)) + sum(w_xs * dispatch(x)); gradients by
// central differences against combine_backward and dispatch_backward.
TEST(MoeDispatch, BackwardMatchesFiniteDifferences) {
    const int64_t T = 7, E = 5, k = 2, d = 3;
    const auto ex = random_experts(T, E - 1, k, 3);  // expert 4 gets no token
    auto w = test::random_normal(size_t(T * k), 4);
    Plan<double> pl(ex, w, T, k, E, 2);  // capacity 2: some tokens lose choices
    ASSERT_GT(pl.p.dropped, 0);
    ASSERT_EQ(pl.p.count(4), 0);
    const int64_t rows = pl.p.rows();
    auto x = test::random_normal(size_t(T * d), 5);
    auto ys = test::random_normal(size_t(rows * d), 6);
    const auto w_out = test::random_normal(size_t(T * d), 7);
    const auto w_xs = test::random_normal(size_t(rows * d), 8);
    std::vector<double> out(size_t(T * d)), xs(size_t(rows * d));
    auto loss = [&] {
        combine_forward(out.data(), ys.data(), pl.p, d);
        dispatch_forward(xs.data(), x.data(), pl.p, d);
        return test::weighted_sum(out, w_out) + test::weighted_sum(xs, w_xs);
    };
    const auto num_ys = test::numeric_gradient(loss, ys.data(), ys.size());
    const auto num_rw = test::numeric_gradient(loss, pl.row_weight.data(), size_t(rows));
    const auto num_x = test::numeric_gradient(loss, x.data(), x.size());
    std::vector<double> d_ys(ys.size(), NAN), d_rw(size_t(rows), NAN), d_x(x.size(), 0.0);
    combine_backward(d_ys.data(), d_rw.data(), w_out.data(), ys.data(), pl.p, d);
    dispatch_backward(d_x.data(), w_xs.data(), pl.p, d);
    EXPECT_TRUE(test::all_close(d_ys, num_ys, 1e-9, 1e-8));
    EXPECT_TRUE(test::all_close(d_rw, num_rw, 1e-9, 1e-8));
    EXPECT_TRUE(test::all_close(d_x, num_x, 1e-9, 1e-8));
    // dispatch_backward accumulates; a null d_row_weight is skipped.
    auto twice = d_x;
    dispatch_backward(twice.data(), w_xs.data(), pl.p, d);
    for (size_t i = 0; i < d_x.size(); ++i) EXPECT_DOUBLE_EQ(twice[i], 2 * d_x[i]);
    std::vector<double> d_ys2(ys.size(), NAN);
    combine_backward(d_ys2.data(), static_cast<double*>(nullptr), w_out.data(), ys.data(), pl.p, d);
    EXPECT_EQ(d_ys2, d_ys);
}

// The float path against double at T*k*d well above the OpenMP threshold, with pointers
// offset by one element (misaligned for AVX-512).
TEST(MoeDispatch, FloatMatchesDoubleInParallelWithOffsetPointers) {
    const int64_t T = 1000, E = 17, k = 3, d = 33;
    const auto ex = random_experts(T, E, k, 11);
    const auto w = test::random_normal(size_t(T * k), 12);
    const auto wf = test::to_f32(w);
    Plan<double> pd(ex, w, T, k, E);
    Plan<float> pf(ex, wf, T, k, E);
    const int64_t rows = pd.p.rows();
    const auto x = test::random_normal(size_t(T * d + 1), 13);
    const auto ys = test::random_normal(size_t(rows * d + 1), 14);
    const auto g = test::random_normal(size_t(T * d + 1), 15);
    const auto xf = test::to_f32(x), ysf = test::to_f32(ys), gf = test::to_f32(g);
    std::vector<double> xs(size_t(rows * d + 1)), out(size_t(T * d + 1)), d_ys(xs.size()),
        d_rw(size_t(rows + 1)), d_x(size_t(T * d + 1), 0.0);
    std::vector<float> xsf(xs.size()), outf(out.size()), d_ysf(xs.size()), d_rwf(d_rw.size()),
        d_xf(d_x.size(), 0.0f);
    dispatch_forward(xs.data() + 1, x.data() + 1, pd.p, d);
    dispatch_forward(xsf.data() + 1, xf.data() + 1, pf.p, d);
    combine_forward(out.data() + 1, ys.data() + 1, pd.p, d);
    combine_forward(outf.data() + 1, ysf.data() + 1, pf.p, d);
    combine_backward(d_ys.data() + 1, d_rw.data() + 1, g.data() + 1, ys.data() + 1, pd.p, d);
    combine_backward(d_ysf.data() + 1, d_rwf.data() + 1, gf.data() + 1, ysf.data() + 1, pf.p, d);
    dispatch_backward(d_x.data() + 1, ys.data() + 1, pd.p, d);
    dispatch_backward(d_xf.data() + 1, ysf.data() + 1, pf.p, d);
    const double eps = 1.2e-7;
    auto tail = [](const auto& v) { return std::vector<double>(v.begin() + 1, v.end()); };
    EXPECT_TRUE(test::all_close(tail(xsf), tail(xs), 0, 0));  // a copy is exact
    EXPECT_TRUE(test::all_close(tail(outf), tail(out), 20 * eps, 10 * eps));
    EXPECT_TRUE(test::all_close(tail(d_ysf), tail(d_ys), 20 * eps, 10 * eps));
    EXPECT_TRUE(test::all_close(tail(d_rwf), tail(d_rw), 100 * eps, 10 * eps));
    EXPECT_TRUE(test::all_close(tail(d_xf), tail(d_x), 20 * eps, 10 * eps));
}

TEST(MoeDispatch, SameBitsForOneAndTwoThreads) {
    const int64_t T = 512, E = 8, k = 2, d = 64;
    const auto ex = random_experts(T, E, k, 21);
    const auto w = test::random_normal_f32(size_t(T * k), 22);
    Plan<float> pl(ex, w, T, k, E);
    const auto ys = test::random_normal_f32(size_t(T * k * d), 23);
    std::vector<float> a(size_t(T * d)), b(a.size()), da(a.size(), 0.0f), db(a.size(), 0.0f);
    const int before = num_threads();
    set_num_threads(1);
    combine_forward(a.data(), ys.data(), pl.p, d);
    dispatch_backward(da.data(), ys.data(), pl.p, d);
    set_num_threads(2);
    combine_forward(b.data(), ys.data(), pl.p, d);
    dispatch_backward(db.data(), ys.data(), pl.p, d);
    set_num_threads(before);
    EXPECT_EQ(a, b);
    EXPECT_EQ(da, db);
}

}  // namespace
}  // namespace moe::sparse
