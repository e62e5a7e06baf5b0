// MoeConfig: every option of a Mixture-of-Experts layer, with defaults: the options every
// router shares at the top level, and each router's own options in a struct of its own
// (cfg.sigmoid_bias.n_groups), read only by that router. docs/routers.md explains each router
// and its keys. In config files the keys stay flat ("moe": {"n_groups": 4}): a key names one
// option whichever struct holds it.
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

// softmax_topk: renormalise the kept weights to sum to 1 (Mixtral) or not (OLMoE, Qwen-MoE);
// or take the top k logits first and softmax over those.
struct SoftmaxTopkOptions {
    bool renormalize = true;
    bool softmax_after_topk = false;
};

// noisy_topk (Shazeer et al. 2017): weight of the load CV^2 loss through the smooth load
// estimator (the importance loss is shared by every router: MoeConfig::importance_coef).
struct NoisyTopkOptions {
    double load_coef = 0.0;
};

// sigmoid_bias (DeepSeek-V3): bias step gamma, weight scale, group-limited routing.
struct SigmoidBiasOptions {
    double bias_update_rate = 1e-3;
    double route_scale = 1.0;
    int64_t n_groups = 1;
    int64_t topk_groups = 1;
};

// assigned: domain d is served by experts domain_experts[d]; the gate learns to predict the
// domain with a cross-entropy loss weighted by assign_loss_coef.
struct AssignedOptions {
    std::vector<std::vector<int64_t>> domain_experts;
    double assign_loss_coef = 1.0;
};

// soft (Puigcerver et al. 2023): slots per expert.
struct SoftMoeOptions {
    int64_t slots_per_expert = 1;
};

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

    // Capacity: 0 = dropless. Otherwise each expert takes at most
    // ceil(capacity_factor * T * k / E) tokens (expert_choice: C = T * cf / E).
    double capacity_factor = 0.0;
    DropPolicy drop_policy = DropPolicy::probability;

    // Shared (always-on) experts, optionally scaled by sigmoid(x . w_gate) as in Qwen-MoE.
    int64_t n_shared = 0;
    int64_t d_shared = 0;  // hidden size of each shared expert; 0 = d_expert
    bool shared_gate = false;

    // Balancing. Switch auxiliary loss alpha * E * sum_i f_i P_i; router z-loss
    // beta * mean_t logsumexp(logits_t)^2; importance CV^2 (Shazeer et al. 2017).
    double aux_loss_coef = 0.01;
    double z_loss_coef = 0.0;
    double importance_coef = 0.0;
    double jitter = 0.0;  // multiply router input by U(1-jitter, 1+jitter) in training

    // Each router's own options.
    SoftmaxTopkOptions softmax_topk;
    NoisyTopkOptions noisy_topk;
    SigmoidBiasOptions sigmoid_bias;
    AssignedOptions assigned;
    SoftMoeOptions soft;

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
