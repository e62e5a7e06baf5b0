// MultiGateMixture: several gates over one expert bank, one dispatch of the union of their
// choices (see multi_gate_mixture.h).
//
// The gate work is O(T * sum_g n_g * d) in GEMMs plus O(T * n_g * top_k) selection loops;
// the expert GEMMs dominate by a factor of about H / n_g. The selection runs in parallel
// over tokens, each token writing only its own rows, so results do not depend on the
// thread count.
#include "moe/multi_gate_mixture.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/parallel_for.h"
#include "kernels/gemm.h"
#include "kernels/softmax.h"
#include "moe/dispatch.h"

namespace moe::sparse {

template <class R>
MultiGateMixture<R>::MultiGateMixture(const std::string& op, ExpertKind kind, int64_t E, int64_t d,
                                      int64_t H, std::vector<std::vector<int64_t>> cols,
                                      int64_t top_k, int64_t max_tokens,
                                      std::vector<int64_t> expert_input,
                                      std::vector<int64_t> gate_input)
    : op_(op),
      E_(E),
      d_(d),
      top_k_(top_k),
      max_tokens_(max_tokens),
      cols_(std::move(cols)),
      expert_input_(std::move(expert_input)),
      gate_input_(std::move(gate_input)) {
    MOE_REQUIRE(E >= 1 && d >= 1 && H >= 1, op, ": bad sizes n_experts=", E, " d_model=", d,
                " d_expert=", H);
    MOE_REQUIRE(max_tokens >= 1, op, ": max_tokens=", max_tokens, " must be >= 1");
    MOE_REQUIRE(!cols_.empty(), op, ": no gates (n_tasks must be >= 1)");
    MOE_REQUIRE(top_k >= 0, op, ": top_k=", top_k, " must be >= 0 (0 = dense gating)");
    MOE_REQUIRE(max_tokens * E < int64_t(INT32_MAX), op, ": max_tokens=", max_tokens,
                " x n_experts=", E, " rows do not fit the int32 row ids");
    col_of_.assign(cols_.size(), std::vector<int32_t>(size_t(E), -1));
    for (size_t g = 0; g < cols_.size(); ++g) {
        const int64_t n = int64_t(cols_[g].size());
        MOE_REQUIRE(n >= 1, op, ": gate ", g, " mixes no experts");
        for (int64_t j = 0; j < n; ++j) {
            const int64_t e = cols_[g][size_t(j)];
            MOE_REQUIRE(e >= 0 && e < E, op, ": gate ", g, " column ", j, " names expert ", e,
                        " of ", E);
            MOE_REQUIRE(col_of_[g][size_t(e)] < 0, op, ": gate ", g, " names expert ", e, " twice");
            col_of_[g][size_t(e)] = int32_t(j);
        }
        gate_off_.push_back(max_tokens * sum_cols_);
        sum_cols_ += n;
        max_cols_ = std::max(max_cols_, n);
    }
    // Inputs: none named means one input for every expert and gate.
    MOE_REQUIRE(expert_input_.empty() == gate_input_.empty(), op,
                ": expert_input and gate_input must be given together (got ", expert_input_.size(),
                " and ", gate_input_.size(), " entries)");
    if (expert_input_.empty()) {
        expert_input_.assign(size_t(E), 0);
        gate_input_.assign(cols_.size(), 0);
    }
    MOE_REQUIRE(int64_t(expert_input_.size()) == E && gate_input_.size() == cols_.size(), op,
                ": expert_input has ", expert_input_.size(), " entries for ", E,
                " experts and gate_input ", gate_input_.size(), " for ", cols_.size(), " gates");
    n_inputs_ = 1;
    for (int64_t i : expert_input_) n_inputs_ = std::max(n_inputs_, i + 1);
    for (int64_t i : gate_input_) n_inputs_ = std::max(n_inputs_, i + 1);
    for (size_t e = 0; e < expert_input_.size(); ++e)
        MOE_REQUIRE(expert_input_[e] >= 0, op, ": expert ", e, " reads input ", expert_input_[e]);
    for (size_t g = 0; g < gate_input_.size(); ++g)
        MOE_REQUIRE(gate_input_[g] >= 0, op, ": gate ", g, " reads input ", gate_input_[g]);
    x_.assign(size_t(n_inputs_), nullptr);
    experts_ = std::make_unique<ExpertBank<R>>(kind, E, d, H);
}

template <class R>
void MultiGateMixture<R>::declare(Arena& params, Arena& acts,
                                  const std::vector<std::string>& gate_prefixes,
                                  const std::string& expert_prefix, const std::string& buf_prefix) {
    MOE_CHECK(gate_prefixes.size() == cols_.size(), op_, "::declare: ", gate_prefixes.size(),
              " gate prefixes for ", cols_.size(), " gates");
    constexpr DType dt = dtype_of<R>();
    for (size_t g = 0; g < cols_.size(); ++g) {
        const int64_t n = int64_t(cols_[g].size());
        w_id_.push_back(params.add(gate_prefixes[g] + "w", {n, d_}, dt));
        b_id_.push_back(params.add(gate_prefixes[g] + "b", {n}, dt));
    }
    experts_->declare(params, expert_prefix);
    buf_prefix_ = buf_prefix;
    const int64_t T = max_tokens_, E = E_, rows = T * E, G = int64_t(cols_.size());
    const std::string& p = buf_prefix;
    acts.add(p + "logits", {T * sum_cols_}, dt);
    acts.add(p + "probs", {T * sum_cols_}, dt);
    acts.add(p + "union_expert", {T, E}, DType::i32);
    acts.add(p + "union_weight", {T, E}, dt);
    acts.add(p + "plan_scratch", {E + rows}, DType::i64);
    acts.add(p + "offsets", {E + 1}, DType::i64);
    acts.add(p + "row_token", {rows}, DType::i32);
    acts.add(p + "row_choice", {rows}, DType::i32);
    acts.add(p + "token_offsets", {T + 1}, DType::i64);
    acts.add(p + "token_rows", {rows}, DType::i32);
    acts.add(p + "row_weights", {G, rows}, dt);
    acts.add(p + "xs", {rows, d_}, dt);
    acts.add(p + "ys", {rows, d_}, dt);
    acts.add(p + "d_xs", {rows, d_}, dt);
    acts.add(p + "d_ys", {rows, d_}, dt);
    acts.add(p + "d_ys_gate", {rows, d_}, dt);
    acts.add(p + "d_row_weight", {rows}, dt);
    acts.add(p + "d_probs", {T, max_cols_}, dt);
    acts.add(p + "d_logits", {T, max_cols_}, dt);
    experts_->declare_buffers(acts, expert_prefix, rows);
}

template <class R>
void MultiGateMixture<R>::bind(Arena& params, Arena& grads, Arena& acts) {
    MOE_CHECK(w_id_.size() == cols_.size(), op_, "::bind before declare");
    w_.clear(), b_.clear(), d_w_.clear(), d_b_.clear();
    for (size_t g = 0; g < cols_.size(); ++g) {
        w_.push_back(params.get(w_id_[g]).ptr<R>());
        b_.push_back(params.get(b_id_[g]).ptr<R>());
        d_w_.push_back(grads.get(w_id_[g]).ptr<R>());
        d_b_.push_back(grads.get(b_id_[g]).ptr<R>());
    }
    experts_->bind(params, grads, acts);
    const std::string& p = buf_prefix_;
    logits_ = acts.get(p + "logits").ptr<R>();
    probs_ = acts.get(p + "probs").ptr<R>();
    union_expert_ = acts.get(p + "union_expert").ptr<int32_t>();
    union_weight_ = acts.get(p + "union_weight").ptr<R>();
    plan_scratch_ = acts.get(p + "plan_scratch").ptr<int64_t>();
    plan_.E = E_;
    plan_.max_rows = max_tokens_ * E_;
    plan_.offsets = acts.get(p + "offsets").ptr<int64_t>();
    plan_.row_token = acts.get(p + "row_token").ptr<int32_t>();
    plan_.row_choice = acts.get(p + "row_choice").ptr<int32_t>();
    plan_.token_offsets = acts.get(p + "token_offsets").ptr<int64_t>();
    plan_.token_rows = acts.get(p + "token_rows").ptr<int32_t>();
    row_weights_ = acts.get(p + "row_weights").ptr<R>();
    plan_.row_weight = row_weights_;
    xs_ = acts.get(p + "xs").ptr<R>();
    ys_ = acts.get(p + "ys").ptr<R>();
    d_xs_ = acts.get(p + "d_xs").ptr<R>();
    d_ys_ = acts.get(p + "d_ys").ptr<R>();
    d_ys_gate_ = acts.get(p + "d_ys_gate").ptr<R>();
    d_row_weight_ = acts.get(p + "d_row_weight").ptr<R>();
    d_probs_ = acts.get(p + "d_probs").ptr<R>();
    d_logits_ = acts.get(p + "d_logits").ptr<R>();
}

template <class R>
void MultiGateMixture<R>::init_weights(Rng& rng, double std, double out_std) {
    MOE_CHECK(!w_.empty(), op_, "::init_weights before bind");
    for (size_t g = 0; g < cols_.size(); ++g) {
        Rng r = rng.fork(uint64_t(g));
        const int64_t n = int64_t(cols_[g].size());
        for (int64_t i = 0; i < n * d_; ++i) w_[g][i] = R(std * double(r.normal()));
        std::fill(b_[g], b_[g] + n, R(0));
    }
    Rng r_experts = rng.fork(uint64_t(cols_.size()));
    experts_->init_weights(r_experts, std, out_std);
}

template <class R>
void MultiGateMixture<R>::route(int64_t T) {
    const int64_t E = E_, G = int64_t(cols_.size());
    for (int64_t g = 0; g < G; ++g) {
        const int64_t n = gate_width(g);
        R* lg = logits_ + gate_off_[size_t(g)];
        const R* x = x_[size_t(gate_input_[size_t(g)])];
        kernels::gemm(false, true, T, n, d_, R(1), x, d_, w_[size_t(g)], d_, R(0), lg, n);
    }
    // Per token: each gate's kept columns (marked 1 in probs, then overwritten by the
    // softmax over them), and the union of their experts.
    parallel_for(T, T * sum_cols_ >= 4096, [&](int64_t t) {
        int32_t* uni = union_expert_ + t * E;
        std::fill(uni, uni + E, int32_t(-1));
        for (int64_t g = 0; g < G; ++g) {
            const int64_t n = gate_width(g);
            R* lg = logits_ + gate_off_[size_t(g)] + t * n;
            R* p = probs_ + gate_off_[size_t(g)] + t * n;
            const R* b = b_[size_t(g)];
            for (int64_t j = 0; j < n; ++j) lg[j] += b[j];
            const int64_t k = top_k_ == 0 ? n : std::min(top_k_, n);
            for (int64_t j = 0; j < n; ++j) p[j] = k == n ? R(1) : R(0);
            if (k < n) {
                for (int64_t pick = 0; pick < k; ++pick) {  // k passes: ties to lower column
                    int64_t best = -1;
                    for (int64_t j = 0; j < n; ++j)
                        if (p[j] == R(0) && (best < 0 || lg[j] > lg[best])) best = j;
                    p[best] = R(1);
                }
            }
            double mx = -HUGE_VAL, sum = 0;
            for (int64_t j = 0; j < n; ++j)
                if (p[j] != R(0)) mx = std::max(mx, double(lg[j]));
            for (int64_t j = 0; j < n; ++j)
                if (p[j] != R(0)) {
                    const double v = std::exp(double(lg[j]) - mx);
                    p[j] = R(v);
                    sum += v;
                    // A kept expert runs even if its weight underflows to 0.
                    const int64_t e = cols_[size_t(g)][size_t(j)];
                    uni[e] = int32_t(e);
                }
            for (int64_t j = 0; j < n; ++j) p[j] = R(double(p[j]) / sum);
        }
    });
    Choices<R> ch;
    ch.T = T;
    ch.k = E;
    ch.expert = union_expert_;
    ch.weight = union_weight_;
    plan_.row_weight = row_weights_;
    build_plan_from_choices(plan_, ch, E, -1, plan_scratch_);
    // Each gate's weight on each union row (0 where that gate did not keep the expert).
    const int64_t rows = plan_.rows();
    for (int64_t g = 0; g < G; ++g) {
        const int64_t n = gate_width(g);
        const R* p = probs_ + gate_off_[size_t(g)];
        const int32_t* col = col_of_[size_t(g)].data();
        R* rw = row_weights_ + g * max_tokens_ * E;
        parallel_for(rows, rows >= 8192, [&](int64_t r) {
            const int64_t t = plan_.row_token[r], e = plan_.row_choice[r] % E;
            rw[r] = col[e] >= 0 ? p[t * n + col[e]] : R(0);
        });
    }
}

template <class R>
void MultiGateMixture<R>::forward(R* const* outs, const R* x, int64_t T) {
    // outs[g]: [T, d] written; x: [T, d]
    MOE_REQUIRE(n_inputs_ == 1, op_, "::forward: one input given, but the experts and gates read ",
                n_inputs_);
    forward(outs, &x, T);
}

template <class R>
void MultiGateMixture<R>::backward(const R* const* d_outs, R* d_x) {
    // d_outs[g]: [T, d]; d_x: [T, d] accumulated
    MOE_REQUIRE(n_inputs_ == 1, op_, "::backward: one input gradient given, but the experts and ",
                "gates read ", n_inputs_, " inputs");
    backward(d_outs, &d_x);
}

template <class R>
void MultiGateMixture<R>::forward(R* const* outs, const R* const* xs, int64_t T) {
    // outs[g]: [T, d] written; xs[i]: [T, d]
    MOE_CHECK(!w_.empty(), op_, "::forward before bind");
    MOE_REQUIRE(T >= 1 && T <= max_tokens_, op_, "::forward: x is [T=", T, ", d=", d_,
                "] but T must be in [1, max_tokens=", max_tokens_, "]");
    for (int64_t g = 0; g < n_gates(); ++g)
        MOE_REQUIRE(outs[g] != nullptr, op_, "::forward: output ", g, " is null");
    for (int64_t i = 0; i < n_inputs_; ++i) {
        MOE_REQUIRE(xs[i] != nullptr, op_, "::forward: input ", i, " of ", n_inputs_, " is null");
        x_[size_t(i)] = xs[i];
    }
    T_ = T;
    route(T);
    if (n_inputs_ == 1) {
        dispatch_forward(xs_, xs[0], plan_, d_);
    } else {  // each row from its expert's input
        const int64_t rows = plan_.rows(), d = d_, E = E_;
        parallel_for(rows, rows * d >= 16384, [&](int64_t r) {
            const int64_t t = plan_.row_token[r], e = plan_.row_choice[r] % E;
            const R* src = x_[size_t(expert_input_[size_t(e)])] + t * d;
            std::copy(src, src + d, xs_ + r * d);
        });
    }
    experts_->forward(ys_, xs_, plan_.offsets);
    for (int64_t g = 0; g < n_gates(); ++g) {
        plan_.row_weight = row_weights_ + g * max_tokens_ * E_;
        combine_forward(outs[g], ys_, plan_, d_);
    }
    plan_.row_weight = row_weights_;
}

template <class R>
void MultiGateMixture<R>::backward(const R* const* d_outs, R* const* d_xin) {
    // d_outs[g]: [T, d]; d_xin[i]: [T, d] accumulated
    MOE_CHECK(x_[0] != nullptr, op_, "::backward without a forward");
    for (int64_t i = 0; i < n_inputs_; ++i)
        MOE_REQUIRE(d_xin[i] != nullptr, op_, "::backward: input gradient ", i, " of ", n_inputs_,
                    " is null");
    const int64_t T = T_, E = E_, d = d_, rows = plan_.rows();
    // Checked before any gradient is touched, so a refused call leaves them as they were.
    for (int64_t g = 0; g < n_gates(); ++g)
        MOE_REQUIRE(d_outs[g] != nullptr, op_, "::backward: output gradient ", g, " is null");
    for (int64_t g = 0; g < n_gates(); ++g) {
        const int64_t n = gate_width(g);
        plan_.row_weight = row_weights_ + g * max_tokens_ * E;
        // The experts' outputs feed every gate: their gradients add up over the gates.
        R* dy = g == 0 ? d_ys_ : d_ys_gate_;
        combine_backward(dy, d_row_weight_, d_outs[g], ys_, plan_, d);
        if (g > 0)
            parallel_for(rows, rows * d >= 16384, [&](int64_t r) {
                for (int64_t i = 0; i < d; ++i) d_ys_[r * d + i] += d_ys_gate_[r * d + i];
            });
        // Row weights back to this gate's [T, n] weights, then through its softmax over
        // the kept columns (unkept ones have p = 0, so they get no gradient).
        std::fill(d_probs_, d_probs_ + T * n, R(0));
        const int32_t* col = col_of_[size_t(g)].data();
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t t = plan_.row_token[r], e = plan_.row_choice[r] % E;
            if (col[e] >= 0) d_probs_[t * n + col[e]] = d_row_weight_[r];
        }
        std::fill(d_logits_, d_logits_ + T * n, R(0));
        kernels::softmax_backward(d_logits_, d_probs_, probs_ + gate_off_[size_t(g)], T, n);
        // logits = x W^T + b.
        const int64_t in = gate_input_[size_t(g)];
        kernels::gemm(true, false, n, d, T, R(1), d_logits_, n, x_[size_t(in)], d, R(1),
                      d_w_[size_t(g)], d);
        R* db = d_b_[size_t(g)];
        for (int64_t t = 0; t < T; ++t)
            for (int64_t j = 0; j < n; ++j) db[j] += d_logits_[t * n + j];
        kernels::gemm(false, false, T, d, n, R(1), d_logits_, n, w_[size_t(g)], d, R(1), d_xin[in],
                      d);
    }
    plan_.row_weight = row_weights_;
    std::fill(d_xs_, d_xs_ + rows * d, R(0));
    experts_->backward(d_xs_, d_ys_, xs_, plan_.offsets);
    if (n_inputs_ == 1) {
        dispatch_backward(d_xin[0], d_xs_, plan_, d);
        return;
    }
    // Each row's gradient to its expert's input; token by token (a token's rows in
    // ascending order, as dispatch_backward), so no two threads write one row.
    parallel_for(T, rows * d >= 16384, [&](int64_t t) {
        for (int64_t i = plan_.token_offsets[t]; i < plan_.token_offsets[t + 1]; ++i) {
            const int64_t r = plan_.token_rows[i], e = plan_.row_choice[r] % E;
            R* dst = d_xin[expert_input_[size_t(e)]] + t * d;
            const R* src = d_xs_ + r * d;
            for (int64_t j = 0; j < d; ++j) dst[j] += src[j];
        }
    });
}

template class MultiGateMixture<float>;
template class MultiGateMixture<double>;

}  // namespace moe::sparse
