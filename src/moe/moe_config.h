// MoeConfig: every option of a Mixture-of-Experts layer, with defaults.
// docs/routers.md explains each router and its keys.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moe::io {
class Config;
}

namespace moe::sparse {

enum class ExpertKind { swiglu, gelu, relu };
enum class DropPolicy { probability, position };

struct MoeConfig {
    int64_t d_model = 64;
    int64_t d_expert = 128;  // hidden size of each routed expert
    int64_t n_experts = 8;   // a runtime value everywhere
    int64_t top_k = 2;
    ExpertKind expert = ExpertKind::swiglu;

    // Router by name: softmax_topk, noisy_topk, switch, expert_choice, sigmoid_bias, hash,
    // soft, dense, assigned.
    std::string router = "softmax_topk";
    bool causal = true;  // set by the model; expert_choice and soft refuse causal models

    // softmax_topk: renormalise the kept weights to sum to 1 (Mixtral) or not (OLMoE,
    // Qwen-MoE); or take the top k logits first and softmax over those.
    bool renormalize = true;
    bool softmax_after_topk = false;

    // Capacity: 0 = dropless. Otherwise each expert takes at most
    // ceil(capacity_factor * T * k / E) tokens (expert_choice: C = T * cf / E).
    double capacity_factor = 0.0;
    DropPolicy drop_policy = DropPolicy::probability;

    // Shared (always-on) experts, optionally scaled by sigmoid(x . w_gate) as in Qwen-MoE.
    int64_t n_shared = 0;
    int64_t d_shared = 0;  // hidden size of each shared expert; 0 = d_expert
    bool shared_gate = false;

    // Balancing. Switch auxiliary loss alpha * E * sum_i f_i P_i; router z-loss
    // beta * mean_t logsumexp(logits_t)^2; importance and load CV^2 (noisy_topk).
    double aux_loss_coef = 0.01;
    double z_loss_coef = 0.0;
    double importance_coef = 0.0;
    double load_coef = 0.0;
    double jitter = 0.0;  // multiply router input by U(1-jitter, 1+jitter) in training

    // sigmoid_bias (DeepSeek-V3): bias step gamma, weight scale, group-limited routing.
    double bias_update_rate = 1e-3;
    double route_scale = 1.0;
    int64_t n_groups = 1;
    int64_t topk_groups = 1;

    // assigned: domain d is served by experts domain_experts[d]; the gate learns to predict
    // the domain with a cross-entropy loss weighted by assign_loss_coef.
    std::vector<std::vector<int64_t>> domain_experts;
    double assign_loss_coef = 1.0;

    // soft: slots per expert.
    int64_t slots_per_expert = 1;

    void validate() const;  // errors name the option and value
};

// Reads every option from config section `section` (e.g. "moe"), keys named as the fields
// above (d_model and causal excepted: the model sets them); absent keys keep the defaults.
// expert is "swiglu", "gelu" or "relu", drop_policy "probability" or "position", domain_experts a
// list of integer lists. Validates the result; errors name the key ("moe.top_k ...").
MoeConfig moe_config_from(io::Config& config, const std::string& section);
// Every key moe_config_from reads, with this config's values (d_model and causal are the
// model's, not keys). moe_config_from(moe_config_to_json(c)) == c.
nlohmann::json moe_config_to_json(const MoeConfig& c);

}  // namespace moe::sparse
