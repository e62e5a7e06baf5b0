// ExpertBank: grouped expert compute over expert-major blocks (see expert_bank.h).
#include "moe/expert_bank.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"
#include "core/parallel_for.h"
#include "kernels/grouped_reduce.h"
#include "nn/mlp.h"

namespace moe::sparse {

template <class R>
ExpertBank<R>::ExpertBank(ExpertKind kind, int64_t E, int64_t d, int64_t H)
    : kind_(kind), E_(E), d_(d), H_(H), order_(size_t(std::max<int64_t>(E, 1))) {
    MOE_CHECK(E >= 1 && d >= 1 && H >= 1, "ExpertBank: bad sizes E=", E, " d=", d, " H=", H);
}

template <class R>
void ExpertBank<R>::declare(Arena& params, const std::string& prefix) {
    prefix_ = prefix;
    constexpr DType dt = dtype_of<R>();
    w1_id_ = params.add(prefix + "w1", {E_, H_, d_}, dt);
    if (kind_ == ExpertKind::swiglu) w3_id_ = params.add(prefix + "w3", {E_, H_, d_}, dt);
    w2_id_ = params.add(prefix + "w2", {E_, d_, H_}, dt);
}

template <class R>
void ExpertBank<R>::declare_buffers(Arena& acts, const std::string& prefix, int64_t max_rows) {
    MOE_CHECK(max_rows >= 1, "ExpertBank::declare_buffers: max_rows=", max_rows);
    buf_prefix_ = prefix;
    max_rows_ = max_rows;
    constexpr DType dt = dtype_of<R>();
    const bool glu = kind_ == ExpertKind::swiglu;
    acts.add(prefix + "h1", {max_rows, H_}, dt);
    if (glu) acts.add(prefix + "h3", {max_rows, H_}, dt);
    acts.add(prefix + "act", {max_rows, H_}, dt);
    acts.add(prefix + "scratch", {glu ? 3 : 2, max_rows, H_}, dt);
}

template <class R>
void ExpertBank<R>::bind(Arena& params, Arena& grads, Arena& acts) {
    const bool glu = kind_ == ExpertKind::swiglu;
    w1_ = params.get(w1_id_).ptr<R>();
    w2_ = params.get(w2_id_).ptr<R>();
    d_w1_ = grads.get(w1_id_).ptr<R>();
    d_w2_ = grads.get(w2_id_).ptr<R>();
    if (glu) {
        w3_ = params.get(w3_id_).ptr<R>();
        d_w3_ = grads.get(w3_id_).ptr<R>();
        h3_ = acts.get(buf_prefix_ + "h3").ptr<R>();
    }
    h1_ = acts.get(buf_prefix_ + "h1").ptr<R>();
    act_ = acts.get(buf_prefix_ + "act").ptr<R>();
    scratch_ = acts.get(buf_prefix_ + "scratch").ptr<R>();
}

template <class R>
void ExpertBank<R>::init_weights(Rng& rng, double std, double out_std, int64_t global_E,
                                 int64_t first) {
    MOE_CHECK(w1_ != nullptr, "ExpertBank::init_weights before bind");
    if (global_E == 0) global_E = E_;
    MOE_CHECK(first >= 0 && first + E_ <= global_E, "ExpertBank::init_weights: experts [", first,
              ", ", first + E_, ") outside a bank of ", global_E);
    // Draw the whole bank's stream and keep this bank's rows, so an expert-parallel rank
    // starts with exactly the weights a single process gives those experts.
    const int64_t per = H_ * d_, skip = first * per, n = E_ * per;
    const int64_t rest = (global_E - first - E_) * per;
    auto fill = [&](R* w, double s) {
        for (int64_t i = 0; i < skip; ++i) rng.normal();
        for (int64_t i = 0; i < n; ++i) w[i] = R(s * double(rng.normal()));
        for (int64_t i = 0; i < rest; ++i) rng.normal();
    };
    fill(w1_, std);
    if (w3_) fill(w3_, std);
    fill(w2_, out_std);
}

template <class R>
int64_t ExpertBank<R>::saved_bytes_per_row() const {
    return (kind_ == ExpertKind::swiglu ? 3 : 2) * H_ * int64_t(sizeof(R));
}

namespace {
// Experts in descending block size (ties: lower expert first) into order[0, n); returns n,
// the number of experts with rows.
int64_t sort_by_rows(int64_t* order, const int64_t* offsets, int64_t E) {
    int64_t n = 0;
    for (int64_t e = 0; e < E; ++e)
        if (offsets[e + 1] > offsets[e]) order[n++] = e;
    std::sort(order, order + n, [&](int64_t a, int64_t b) {
        const int64_t na = offsets[a + 1] - offsets[a], nb = offsets[b + 1] - offsets[b];
        return na != nb ? na > nb : a < b;
    });
    return n;
}

// Spreading experts over the threads (each GEMM on one thread) measured 3-8% faster than
// threading each GEMM when the load is even (T=4096 d=512: E=8 h=1024 k=2 205 vs 190
// GFLOP/s forward+backward, E=64 h=256 k=8 192 vs 188), because one-thread GEMMs skip
// oneDNN's fork/join and splitting. It loses when one thread is left with the tail: the
// largest-first greedy assignment (what the dynamic schedule does) is simulated, and the
// experts are spread only if its slowest thread has at most 5% more rows than an even
// split. Rows stand for time: every expert GEMM is linear in its rows.
bool spread_pays(const int64_t* order, int64_t n, const int64_t* offsets, int threads) {
    // The bound first: 2 * threads overflows an int for a thread count near 2^30.
    constexpr int kMaxThreads = 256;
    if (threads <= 1 || threads > kMaxThreads || n < 2 * int64_t(threads)) return false;
    int64_t load[kMaxThreads] = {};
    int64_t total = 0;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t rows = offsets[order[i] + 1] - offsets[order[i]];
        int best = 0;
        for (int t = 1; t < threads; ++t)
            if (load[t] < load[best]) best = t;
        load[best] += rows;
        total += rows;
    }
    const int64_t slowest = *std::max_element(load, load + threads);
    return double(slowest) * double(threads) <= 1.05 * double(total);
}
}  // namespace

template <class R>
typename ExpertBank<R>::Parallel ExpertBank<R>::resolve(const int64_t* offsets) const {
    if (parallel_ != Parallel::automatic) return parallel_;
    // Doubles run the reference GEMM (one thread whatever the mode): keep them simple.
    if (!std::is_same_v<R, float>) return Parallel::over_gemm;
    std::vector<int64_t> order(
        static_cast<size_t>(E_));  // for callers outside the step (benchmarks)
    const int64_t n = sort_by_rows(order.data(), offsets, E_);
    return spread_pays(order.data(), n, offsets, omp_get_max_threads()) ? Parallel::over_experts
                                                                        : Parallel::over_gemm;
}

template <class R>
template <class Body>
void ExpertBank<R>::for_each_expert(const int64_t* offsets, const Body& body) {
    // Largest blocks first, so the last expert a thread picks up is a small one. order_ was
    // sized at construction: nothing is allocated here.
    const int64_t n = sort_by_rows(order_.data(), offsets, E_);
    Parallel mode = parallel_;
    if (mode == Parallel::automatic)
        mode = std::is_same_v<R, float> &&
                       spread_pays(order_.data(), n, offsets, omp_get_max_threads())
                   ? Parallel::over_experts
                   : Parallel::over_gemm;
    if (mode == Parallel::over_gemm) {
        for (int64_t e = 0; e < E_; ++e)
            if (offsets[e + 1] > offsets[e]) body(e);
        return;
    }
    parallel_for_dynamic(n, true, [&](int64_t i) { body(order_[size_t(i)]); });
}

template <class R>
void ExpertBank<R>::forward_expert(int64_t e, R* ys, const R* xs, const int64_t* offsets) {
    const int64_t o = offsets[e], n = offsets[e + 1] - offsets[e];
    const int64_t wo = e * H_ * d_;
    if (kind_ == ExpertKind::swiglu) {
        nn::swiglu_mlp_forward(ys + o * d_, h1_ + o * H_, h3_ + o * H_, act_ + o * H_, xs + o * d_,
                               w1_ + wo, w3_ + wo, w2_ + wo, n, d_, H_);
    } else if (kind_ == ExpertKind::relu) {
        nn::relu_mlp_forward(ys + o * d_, h1_ + o * H_, act_ + o * H_, xs + o * d_, w1_ + wo,
                             static_cast<const R*>(nullptr), w2_ + wo,
                             static_cast<const R*>(nullptr), n, d_, H_);
    } else {
        nn::gelu_mlp_forward(ys + o * d_, h1_ + o * H_, act_ + o * H_, xs + o * d_, w1_ + wo,
                             static_cast<const R*>(nullptr), w2_ + wo,
                             static_cast<const R*>(nullptr), n, d_, H_);
    }
}

template <class R>
void ExpertBank<R>::backward_expert(int64_t e, R* d_xs, const R* d_ys, const R* xs,
                                    const int64_t* offsets) {
    const int64_t o = offsets[e], n = offsets[e + 1] - offsets[e];
    const int64_t wo = e * H_ * d_;
    R* dx = d_xs ? d_xs + o * d_ : nullptr;
    if (kind_ == ExpertKind::swiglu) {
        nn::swiglu_mlp_backward(dx, d_w1_ + wo, d_w3_ + wo, d_w2_ + wo, scratch_ + 3 * o * H_,
                                d_ys + o * d_, xs + o * d_, h1_ + o * H_, h3_ + o * H_,
                                act_ + o * H_, w1_ + wo, w3_ + wo, w2_ + wo, n, d_, H_);
    } else if (kind_ == ExpertKind::relu) {
        nn::relu_mlp_backward(dx, d_w1_ + wo, static_cast<R*>(nullptr), d_w2_ + wo,
                              static_cast<R*>(nullptr), scratch_ + 2 * o * H_, d_ys + o * d_,
                              xs + o * d_, h1_ + o * H_, act_ + o * H_, w1_ + wo, w2_ + wo, n, d_,
                              H_);
    } else {
        nn::gelu_mlp_backward(dx, d_w1_ + wo, static_cast<R*>(nullptr), d_w2_ + wo,
                              static_cast<R*>(nullptr), scratch_ + 2 * o * H_, d_ys + o * d_,
                              xs + o * d_, h1_ + o * H_, act_ + o * H_, w1_ + wo, w2_ + wo, n, d_,
                              H_);
    }
}

template <class R>
void ExpertBank<R>::forward(R* ys, const R* xs, const int64_t* offsets) {
    // ys, xs: [rows, d]; offsets: [E + 1]
    MOE_CHECK(w1_ != nullptr, "ExpertBank::forward before bind");
    MOE_CHECK(offsets[0] == 0 && offsets[E_] <= max_rows_, "ExpertBank::forward: ", offsets[E_],
              " rows but buffers hold ", max_rows_);
    for (int64_t e = 0; e < E_; ++e)
        MOE_CHECK(offsets[e + 1] >= offsets[e], "ExpertBank::forward: offsets decrease at ", e);
    for_each_expert(offsets, [&](int64_t e) { forward_expert(e, ys, xs, offsets); });
}

template <class R>
void ExpertBank<R>::backward(R* d_xs, const R* d_ys, const R* xs, const int64_t* offsets) {
    // d_xs (accumulated, nullable), d_ys, xs: [rows, d]; offsets: [E + 1]
    MOE_CHECK(w1_ != nullptr, "ExpertBank::backward before bind");
    MOE_CHECK(offsets[0] == 0 && offsets[E_] <= max_rows_, "ExpertBank::backward: ", offsets[E_],
              " rows but buffers hold ", max_rows_);
    // An expert's rows are the same in one process and on its expert-parallel owner, so its
    // weight gradients need no canonical grouping (kernels/grouped_reduce.h); worker
    // threads have 1 anyway.
    const kernels::ReductionGroups plain(1);
    for_each_expert(offsets, [&](int64_t e) { backward_expert(e, d_xs, d_ys, xs, offsets); });
}

template class ExpertBank<float>;
template class ExpertBank<double>;

}  // namespace moe::sparse
