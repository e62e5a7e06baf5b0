// PleLayer: CGC's gates as column sets of one MultiGateMixture (see ple_layer.h).
#include "moe/ple_layer.h"

#include "core/check.h"

namespace moe::sparse {

namespace {
const PleShape& checked(const PleShape& s) {
    MOE_REQUIRE(s.n_tasks >= 1, "PleLayer: n_tasks=", s.n_tasks, " must be >= 1");
    MOE_REQUIRE(s.n_shared >= 0 && s.n_per_task >= 0, "PleLayer: n_shared=", s.n_shared,
                " n_per_task=", s.n_per_task, " must be >= 0");
    MOE_REQUIRE(s.n_shared + s.n_per_task >= 1, "PleLayer: n_shared=", s.n_shared,
                " n_per_task=", s.n_per_task, " leave the task gates no expert");
    return s;
}

// Gate k < K: task k's own experts, then the shared ones; gate K (shared_output): all, in
// bank order.
std::vector<std::vector<int64_t>> gate_columns(const PleShape& s) {
    const int64_t Es = s.n_shared, Et = s.n_per_task, K = s.n_tasks;
    std::vector<std::vector<int64_t>> cols;
    for (int64_t k = 0; k < K; ++k) {
        std::vector<int64_t> c;
        for (int64_t j = 0; j < Et; ++j) c.push_back(Es + k * Et + j);
        for (int64_t j = 0; j < Es; ++j) c.push_back(j);
        cols.push_back(c);
    }
    if (s.shared_output) {
        std::vector<int64_t> c;
        for (int64_t e = 0; e < Es + K * Et; ++e) c.push_back(e);
        cols.push_back(c);
    }
    return cols;
}

// Which input each bank expert and each gate reads (per_task_inputs), else none named.
std::vector<int64_t> expert_inputs(const PleShape& s) {
    if (!s.per_task_inputs) return {};
    std::vector<int64_t> in(size_t(s.n_shared), s.n_tasks);
    for (int64_t k = 0; k < s.n_tasks; ++k)
        for (int64_t j = 0; j < s.n_per_task; ++j) in.push_back(k);
    return in;
}
std::vector<int64_t> gate_inputs(const PleShape& s) {
    if (!s.per_task_inputs) return {};
    std::vector<int64_t> in;
    for (int64_t k = 0; k < s.n_tasks; ++k) in.push_back(k);
    if (s.shared_output) in.push_back(s.n_tasks);
    return in;
}
}  // namespace

template <class R>
PleLayer<R>::PleLayer(const MoeConfig& cfg, const PleShape& shape, int64_t max_tokens)
    : shape_(checked(shape)),
      mix_("PleLayer", cfg.expert, shape.n_shared + shape.n_tasks * shape.n_per_task, cfg.d_model,
           cfg.d_expert, gate_columns(shape), shape.top_k, max_tokens, expert_inputs(shape),
           gate_inputs(shape)),
      outs_(size_t(shape.n_tasks + (shape.shared_output ? 1 : 0))),
      d_outs_(outs_.size()) {}

template <class R>
void PleLayer<R>::declare(Arena& params, Arena& acts, const std::string& prefix) {
    std::vector<std::string> gates;
    for (int64_t k = 0; k < shape_.n_tasks; ++k)
        gates.push_back(prefix + "task." + std::to_string(k) + ".gate.");
    if (shape_.shared_output) gates.push_back(prefix + "shared.gate.");
    mix_.declare(params, acts, gates, prefix + "experts.", prefix + "ple.");
}

template <class R>
void PleLayer<R>::forward(R* const* task_outs, R* shared_out, const R* x, int64_t T) {
    // task_outs[k]: [T, d] written; shared_out: [T, d] written or null; x: [T, d]
    MOE_REQUIRE((shared_out != nullptr) == shape_.shared_output, "PleLayer::forward: ",
                shape_.shared_output ? "shared_output is set but no shared output was given"
                                     : "a shared output was given but shared_output is off");
    for (int64_t k = 0; k < shape_.n_tasks; ++k) outs_[size_t(k)] = task_outs[k];
    if (shape_.shared_output) outs_.back() = shared_out;
    MOE_REQUIRE(!shape_.per_task_inputs, "PleLayer::forward: one input given, but the level ",
                "reads n_tasks + 1 = ", shape_.n_tasks + 1, " (per_task_inputs)");
    mix_.forward(outs_.data(), x, T);
}

template <class R>
void PleLayer<R>::forward(R* const* task_outs, R* shared_out, const R* const* xs, int64_t T) {
    // task_outs[k]: [T, d] written; shared_out: [T, d] written or null; xs[i]: [T, d]
    if (!shape_.per_task_inputs) return forward(task_outs, shared_out, xs[0], T);
    MOE_REQUIRE((shared_out != nullptr) == shape_.shared_output, "PleLayer::forward: ",
                shape_.shared_output ? "shared_output is set but no shared output was given"
                                     : "a shared output was given but shared_output is off");
    for (int64_t k = 0; k < shape_.n_tasks; ++k) outs_[size_t(k)] = task_outs[k];
    if (shape_.shared_output) outs_.back() = shared_out;
    // A level without shared experts and shared gate never reads the shared input: the
    // mixture then sees only the K task inputs.
    mix_.forward(outs_.data(), xs, T);
}

template <class R>
void PleLayer<R>::backward(const R* const* d_task_outs, const R* d_shared_out, R* d_x) {
    // d_task_outs[k]: [T, d]; d_shared_out: [T, d] or null; d_x: [T, d] accumulated
    MOE_REQUIRE((d_shared_out != nullptr) == shape_.shared_output, "PleLayer::backward: ",
                shape_.shared_output ? "shared_output is set but no shared gradient was given"
                                     : "a shared gradient was given but shared_output is off");
    for (int64_t k = 0; k < shape_.n_tasks; ++k) d_outs_[size_t(k)] = d_task_outs[k];
    if (shape_.shared_output) d_outs_.back() = d_shared_out;
    MOE_REQUIRE(!shape_.per_task_inputs, "PleLayer::backward: one input gradient given, but ",
                "the level reads n_tasks + 1 = ", shape_.n_tasks + 1, " (per_task_inputs)");
    mix_.backward(d_outs_.data(), d_x);
}

template <class R>
void PleLayer<R>::backward(const R* const* d_task_outs, const R* d_shared_out, R* const* d_xs) {
    // d_task_outs[k]: [T, d]; d_shared_out: [T, d] or null; d_xs[i]: [T, d] accumulated
    if (!shape_.per_task_inputs) return backward(d_task_outs, d_shared_out, d_xs[0]);
    MOE_REQUIRE((d_shared_out != nullptr) == shape_.shared_output, "PleLayer::backward: ",
                shape_.shared_output ? "shared_output is set but no shared gradient was given"
                                     : "a shared gradient was given but shared_output is off");
    for (int64_t k = 0; k < shape_.n_tasks; ++k) d_outs_[size_t(k)] = d_task_outs[k];
    if (shape_.shared_output) d_outs_.back() = d_shared_out;
    mix_.backward(d_outs_.data(), d_xs);
}

template class PleLayer<float>;
template class PleLayer<double>;

}  // namespace moe::sparse
