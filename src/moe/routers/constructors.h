// Constructors of every router, one per file in src/moe/routers/. make_router (in
// src/moe/router_factory.cpp) maps cfg.router to one of these.
#pragma once

#include <memory>

#include "moe/router.h"

namespace moe::sparse {

template <class R> std::unique_ptr<Router<R>> make_softmax_topk_router(const MoeConfig& cfg);
template <class R> std::unique_ptr<Router<R>> make_noisy_topk_router(const MoeConfig& cfg);
template <class R> std::unique_ptr<Router<R>> make_switch_router(const MoeConfig& cfg);
template <class R> std::unique_ptr<Router<R>> make_expert_choice_router(const MoeConfig& cfg);
template <class R> std::unique_ptr<Router<R>> make_sigmoid_bias_router(const MoeConfig& cfg);
template <class R> std::unique_ptr<Router<R>> make_hash_router(const MoeConfig& cfg);
template <class R> std::unique_ptr<Router<R>> make_dense_router(const MoeConfig& cfg);
template <class R> std::unique_ptr<Router<R>> make_assigned_router(const MoeConfig& cfg);

}  // namespace moe::sparse
