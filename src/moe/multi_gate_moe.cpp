// MultiGateMoe: K gates, each over every expert of one shared bank (see multi_gate_moe.h).
#include "moe/multi_gate_moe.h"

#include <vector>

#include "core/check.h"

namespace moe::sparse {

namespace {
// Every task's gate covers the whole bank, in bank order.
std::vector<std::vector<int64_t>> all_experts(int64_t n_tasks, int64_t E) {
    MOE_REQUIRE(n_tasks >= 1, "MultiGateMoe: n_tasks=", n_tasks, " must be >= 1");
    MOE_REQUIRE(E >= 1, "MultiGateMoe: n_experts=", E, " must be >= 1");
    std::vector<int64_t> all(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) all[size_t(e)] = e;
    return std::vector<std::vector<int64_t>>(size_t(n_tasks), all);
}
}  // namespace

template <class R>
MultiGateMoe<R>::MultiGateMoe(const MoeConfig& cfg, int64_t n_tasks, int64_t max_tokens,
                              int64_t top_k)
    : n_tasks_(n_tasks),
      mix_("MultiGateMoe", cfg.expert, cfg.n_experts, cfg.d_model, cfg.d_expert,
           all_experts(n_tasks, cfg.n_experts), top_k, max_tokens) {
    MOE_REQUIRE(top_k >= 0 && top_k <= cfg.n_experts, "MultiGateMoe: top_k=", top_k,
                " must be 0 (dense) or in [1, n_experts=", cfg.n_experts, "]");
}

template <class R>
void MultiGateMoe<R>::declare(Arena& params, Arena& acts, const std::string& prefix) {
    std::vector<std::string> gates;
    for (int64_t k = 0; k < n_tasks_; ++k)
        gates.push_back(prefix + "gate." + std::to_string(k) + ".");
    mix_.declare(params, acts, gates, prefix + "experts.", prefix + "mmoe.");
}

template class MultiGateMoe<float>;
template class MultiGateMoe<double>;

}  // namespace moe::sparse
