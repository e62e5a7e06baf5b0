// make_router: the router named by cfg.router.
//
// One line per router, each `if (is("name")) return make_<name>_router<R>(cfg);`, so
// adding a router is a one-line edit that does not touch anyone else's line, and the
// error for an unknown name lists exactly the names checked above it. A router that
// needs the whole sequence refuses cfg.causal in its own make_* function.
// "soft" is not a Router: make_moe_block builds a SoftMoeLayer for it (src/moe/moe_block.h).
#include <string>

#include "core/check.h"
#include "moe/router.h"
#include "moe/routers/constructors.h"

namespace moe::sparse {

template <class R>
std::unique_ptr<Router<R>> make_router(const MoeConfig& cfg) {
    std::string known;
    auto is = [&](const char* name) {
        known += (known.empty() ? "" : ", ") + std::string(name);
        return cfg.router == name;
    };
    if (is("softmax_topk")) return make_softmax_topk_router<R>(cfg);
    if (is("noisy_topk")) return make_noisy_topk_router<R>(cfg);
    if (is("switch")) return make_switch_router<R>(cfg);
    if (is("sigmoid_bias")) return make_sigmoid_bias_router<R>(cfg);
    if (is("hash")) return make_hash_router<R>(cfg);
    if (is("dense")) return make_dense_router<R>(cfg);
    if (is("expert_choice")) return make_expert_choice_router<R>(cfg);
    if (is("assigned")) return make_assigned_router<R>(cfg);
    MOE_FAIL("moe.router: unknown router '", cfg.router, "'; known routers: ", known);
}

template std::unique_ptr<Router<float>> make_router<float>(const MoeConfig&);
template std::unique_ptr<Router<double>> make_router<double>(const MoeConfig&);

}  // namespace moe::sparse
