// hash: a fixed hash of the token id picks the experts (Roller et al. 2021, "Hash Layers").
//
//   h_0 = splitmix64(id), h_{j+1} = splitmix64(h_j)
//   choice j = a partial Fisher-Yates shuffle of the experts driven by the h_j: swap
//              slot j with slot j + (h_j mod (E - j)) and take slot j (k = 1: h_0 mod E)
//   weight = 1 / k
//
// A baseline with no learned gate: no parameters, no losses, and no gradient to x from the
// routing (backward does nothing). Routing depends on the token id alone, so it is the same
// at every position, step and run. splitmix64 spreads consecutive ids evenly: over many ids
// each expert gets close to T*k/E tokens, but a batch of one repeated id all goes to the
// same k experts. With capacity_factor > 0 the earliest tokens keep their seats.
#include <cmath>
#include <memory>
#include <string>
#include <utility>

#include "core/check.h"
#include "moe/routers/constructors.h"

namespace moe::sparse {

namespace {

// splitmix64's finaliser (Steele, Lea, Flood 2014): a bijection of uint64 whose outputs
// pass BigCrush for consecutive inputs; the constant added first keeps id 0 from mapping
// to 0.
uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

template <class R>
class HashRouter final : public Router<R> {
  public:
    explicit HashRouter(const MoeConfig& cfg) : Router<R>(cfg) {
        MOE_REQUIRE(cfg.top_k >= 1 && cfg.top_k <= cfg.n_experts, "moe.top_k (", cfg.top_k,
                    ") must be in [1, moe.n_experts (", cfg.n_experts, ")] for router hash");
    }
    const char* name() const override { return "hash"; }
    int64_t max_rows(int64_t T) const override { return T * this->cfg_.top_k; }

    void declare(Arena& params, Arena& acts, const std::string& prefix,
                 int64_t max_tokens) override;
    void bind(Arena& params, Arena& grads, Arena& acts) override;
    void init_weights(Rng& rng) override {}

    void forward(const RouterInput<R>& in, RoutingPlan<R>& plan, RouterLosses& losses) override;
    // No learned gate: nothing reaches x or any parameter.
    void backward(const RouterInput<R>& in, const RoutingPlan<R>& plan, const R* d_row_weight,
                  R* d_x) override {}

  private:
    std::string prefix_;
    int64_t max_tokens_ = 0;
    int32_t* expert_ = nullptr;   // [max_T, k]
    R* weight_ = nullptr;         // [max_T, k]
    int64_t* scratch_ = nullptr;  // [E + max_T * k] for build_plan_from_choices
    int32_t* unused_ = nullptr;   // [E] experts not yet chosen by the current token
};

template <class R>
void HashRouter<R>::declare(Arena& params, Arena& acts, const std::string& prefix,
                            int64_t max_tokens) {
    MOE_CHECK(max_tokens > 0, "hash router: max_tokens must be > 0, got ", max_tokens);
    const int64_t E = this->cfg_.n_experts, k = this->cfg_.top_k;
    prefix_ = prefix;
    max_tokens_ = max_tokens;
    const std::string p = prefix + "router.";
    acts.add(p + "hash_expert_scratch", {max_tokens, k}, DType::i32);
    acts.add(p + "hash_weight_scratch", {max_tokens, k}, dtype_of<R>());
    acts.add(p + "plan_scratch", {E + max_tokens * k}, DType::i64);
    acts.add(p + "unused_scratch", {E}, DType::i32);
}

template <class R>
void HashRouter<R>::bind(Arena& params, Arena& grads, Arena& acts) {
    const std::string p = prefix_ + "router.";
    expert_ = acts.get(p + "hash_expert_scratch").ptr<int32_t>();
    weight_ = acts.get(p + "hash_weight_scratch").ptr<R>();
    scratch_ = acts.get(p + "plan_scratch").ptr<int64_t>();
    unused_ = acts.get(p + "unused_scratch").ptr<int32_t>();
}

template <class R>
void HashRouter<R>::forward(const RouterInput<R>& in, RoutingPlan<R>& plan, RouterLosses& losses) {
    // in.token_ids: [T]
    const MoeConfig& cfg = this->cfg_;
    const int64_t T = in.T, E = cfg.n_experts, k = cfg.top_k;
    MOE_CHECK(expert_ != nullptr, "hash router: forward before bind");
    MOE_CHECK(T >= 1 && T <= max_tokens_, "hash router: T=", T,
              " outside [1, max_tokens=", max_tokens_, "]");
    MOE_REQUIRE(in.token_ids != nullptr,
                "router hash routes by token id, but RouterInput::token_ids is null");
    for (int64_t t = 0; t < T; ++t) {
        // Partial Fisher-Yates over the experts: k distinct choices from k hashes.
        for (int64_t e = 0; e < E; ++e) unused_[e] = int32_t(e);
        uint64_t h = uint64_t(uint32_t(in.token_ids[t]));
        for (int64_t j = 0; j < k; ++j) {
            h = splitmix64(h);
            const int64_t pick = j + int64_t(h % uint64_t(E - j));
            std::swap(unused_[j], unused_[pick]);
            expert_[t * k + j] = unused_[j];
            weight_[t * k + j] = R(1.0 / double(k));
        }
    }
    Choices<R> ch;
    ch.T = T;
    ch.k = k;
    ch.expert = expert_;
    ch.weight = weight_;
    ch.priority = nullptr;  // equal weights: capacity keeps the earliest tokens
    const int64_t cap = cfg.capacity_factor > 0
                            ? int64_t(std::ceil(cfg.capacity_factor * double(T * k) / double(E)))
                            : -1;
    build_plan_from_choices(plan, ch, E, cap, scratch_);
    losses = RouterLosses{};
}

}  // namespace

template <class R>
std::unique_ptr<Router<R>> make_hash_router(const MoeConfig& cfg) {
    return std::make_unique<HashRouter<R>>(cfg);
}

template std::unique_ptr<Router<float>> make_hash_router<float>(const MoeConfig&);
template std::unique_ptr<Router<double>> make_hash_router<double>(const MoeConfig&);

}  // namespace moe::sparse
