// MoeConfig: validation and reading from a config section.
#include "moe/moe_config.h"

#include <cmath>

#include "core/check.h"
#include "io/config.h"

namespace moe::sparse {

void MoeConfig::validate() const {
    MOE_REQUIRE(!router.empty(), "moe.router must name a router, e.g. \"softmax_topk\"");
    MOE_REQUIRE(d_model >= 1, "moe.d_model (", d_model, ") must be >= 1");
    MOE_REQUIRE(n_experts >= 1, "moe.n_experts (", n_experts, ") must be >= 1");
    MOE_REQUIRE(d_expert >= 1, "moe.d_expert (", d_expert, ") must be >= 1");
    MOE_REQUIRE(top_k >= 1, "moe.top_k (", top_k, ") must be >= 1");
    MOE_REQUIRE(top_k <= n_experts, "moe.top_k (", top_k, ") must be <= moe.n_experts (", n_experts,
                ")");
    MOE_REQUIRE(std::isfinite(capacity_factor) && capacity_factor >= 0, "moe.capacity_factor (",
                capacity_factor, ") must be >= 0 (0 = dropless)");
    MOE_REQUIRE(n_shared >= 0, "moe.n_shared (", n_shared, ") must be >= 0");
    MOE_REQUIRE(d_shared >= 0, "moe.d_shared (", d_shared, ") must be >= 0 (0 = d_expert)");
    const std::pair<const char*, double> coefs[] = {
        {"aux_loss_coef", aux_loss_coef},
        {"z_loss_coef", z_loss_coef},
        {"importance_coef", importance_coef},
        {"load_coef", noisy_topk.load_coef},
        {"assign_loss_coef", assigned.assign_loss_coef},
        {"bias_update_rate", sigmoid_bias.bias_update_rate}};
    for (const auto& [key, v] : coefs)
        MOE_REQUIRE(std::isfinite(v) && v >= 0, "moe.", key, " (", v, ") must be >= 0");
    MOE_REQUIRE(std::isfinite(jitter) && jitter >= 0 && jitter < 1, "moe.jitter (", jitter,
                ") must be in [0, 1)");
    MOE_REQUIRE(std::isfinite(sigmoid_bias.route_scale) && sigmoid_bias.route_scale > 0,
                "moe.route_scale (", sigmoid_bias.route_scale, ") must be > 0");
    MOE_REQUIRE(sigmoid_bias.n_groups >= 1, "moe.n_groups (", sigmoid_bias.n_groups,
                ") must be >= 1");
    MOE_REQUIRE(n_experts % sigmoid_bias.n_groups == 0, "moe.n_groups (", sigmoid_bias.n_groups,
                ") must divide moe.n_experts (", n_experts, ")");
    MOE_REQUIRE(sigmoid_bias.topk_groups >= 1 && sigmoid_bias.topk_groups <= sigmoid_bias.n_groups,
                "moe.topk_groups (", sigmoid_bias.topk_groups, ") must be in [1, moe.n_groups (",
                sigmoid_bias.n_groups, ")]");
    if (sigmoid_bias.n_groups > 1)
        MOE_REQUIRE(top_k <= sigmoid_bias.topk_groups * (n_experts / sigmoid_bias.n_groups),
                    "moe.top_k (", top_k, ") must be <= moe.topk_groups (",
                    sigmoid_bias.topk_groups, ") * experts per group (",
                    n_experts / sigmoid_bias.n_groups, ")");
    MOE_REQUIRE(soft.slots_per_expert >= 1, "moe.slots_per_expert (", soft.slots_per_expert,
                ") must be >= 1");
    for (size_t dom = 0; dom < assigned.domain_experts.size(); ++dom) {
        MOE_REQUIRE(!assigned.domain_experts[dom].empty(), "moe.domain_experts[", dom,
                    "] is empty: every domain needs at least one expert");
        for (int64_t e : assigned.domain_experts[dom])
            MOE_REQUIRE(e >= 0 && e < n_experts, "moe.domain_experts[", dom, "] names expert ", e,
                        ", outside [0, moe.n_experts (", n_experts, "))");
        if (router == "assigned")
            MOE_REQUIRE(int64_t(assigned.domain_experts[dom].size()) == top_k,
                        "moe.domain_experts[", dom, "] lists ", assigned.domain_experts[dom].size(),
                        " experts; the assigned router needs exactly moe.top_k (", top_k, ")");
    }
    // Dropping by probability compares a token with every other token of the batch, later
    // ones included: in a causal model a token's output would depend on the future.
    MOE_REQUIRE(!(causal && capacity_factor > 0 && drop_policy == DropPolicy::probability),
                "moe.capacity_factor > 0 with moe.drop_policy \"probability\" lets later tokens "
                "push earlier ones out of an expert, which a causal model must not allow: use "
                "\"position\" or capacity_factor 0 (dropless)");
}

MoeConfig moe_config_from(io::Config& c, const std::string& section) {
    MoeConfig m;
    const std::string p = section.empty() ? "" : section + ".";
    m.router = c.get<std::string>(p + "router", m.router);
    m.n_experts = c.get<int64_t>(p + "n_experts", m.n_experts);
    m.top_k = c.get<int64_t>(p + "top_k", m.top_k);
    m.d_expert = c.get<int64_t>(p + "d_expert", m.d_expert);
    const std::string expert = c.get<std::string>(p + "expert", "swiglu");
    MOE_REQUIRE(expert == "swiglu" || expert == "gelu" || expert == "relu", c.source(), ": key '",
                p, "expert' must be \"swiglu\", \"gelu\" or \"relu\", got \"", expert, "\"");
    m.expert = expert == "swiglu" ? ExpertKind::swiglu
               : expert == "gelu" ? ExpertKind::gelu
                                  : ExpertKind::relu;
    m.softmax_topk.renormalize = c.get<bool>(p + "renormalize", m.softmax_topk.renormalize);
    m.softmax_topk.softmax_after_topk =
        c.get<bool>(p + "softmax_after_topk", m.softmax_topk.softmax_after_topk);
    m.capacity_factor = c.get<double>(p + "capacity_factor", m.capacity_factor);
    const std::string drop = c.get<std::string>(p + "drop_policy", "probability");
    MOE_REQUIRE(drop == "probability" || drop == "position", c.source(), ": key '", p,
                "drop_policy' must be \"probability\" or \"position\", got \"", drop, "\"");
    m.drop_policy = drop == "probability" ? DropPolicy::probability : DropPolicy::position;
    m.n_shared = c.get<int64_t>(p + "n_shared", m.n_shared);
    m.d_shared = c.get<int64_t>(p + "d_shared", m.d_shared);
    m.shared_gate = c.get<bool>(p + "shared_gate", m.shared_gate);
    m.aux_loss_coef = c.get<double>(p + "aux_loss_coef", m.aux_loss_coef);
    m.z_loss_coef = c.get<double>(p + "z_loss_coef", m.z_loss_coef);
    m.importance_coef = c.get<double>(p + "importance_coef", m.importance_coef);
    m.noisy_topk.load_coef = c.get<double>(p + "load_coef", m.noisy_topk.load_coef);
    m.jitter = c.get<double>(p + "jitter", m.jitter);
    m.sigmoid_bias.bias_update_rate =
        c.get<double>(p + "bias_update_rate", m.sigmoid_bias.bias_update_rate);
    m.sigmoid_bias.route_scale = c.get<double>(p + "route_scale", m.sigmoid_bias.route_scale);
    m.sigmoid_bias.n_groups = c.get<int64_t>(p + "n_groups", m.sigmoid_bias.n_groups);
    m.sigmoid_bias.topk_groups = c.get<int64_t>(p + "topk_groups", m.sigmoid_bias.topk_groups);
    m.assigned.domain_experts =
        c.get<std::vector<std::vector<int64_t>>>(p + "domain_experts", m.assigned.domain_experts);
    m.assigned.assign_loss_coef =
        c.get<double>(p + "assign_loss_coef", m.assigned.assign_loss_coef);
    m.soft.slots_per_expert = c.get<int64_t>(p + "slots_per_expert", m.soft.slots_per_expert);
    try {
        m.validate();
    } catch (const Error& e) {
        // validate() names keys "moe.<key>"; say which file, and the real section.
        std::string msg = e.what();
        if (section != "moe")
            for (size_t at = msg.find("moe."); at != std::string::npos;
                 at = msg.find("moe.", at + p.size()))
                msg.replace(at, 4, p);
        MOE_FAIL(c.source(), ": ", msg);
    }
    return m;
}

nlohmann::json moe_config_to_json(const MoeConfig& m) {
    return {{"router", m.router},
            {"n_experts", m.n_experts},
            {"top_k", m.top_k},
            {"d_expert", m.d_expert},
            {"expert", m.expert == ExpertKind::swiglu ? "swiglu"
                       : m.expert == ExpertKind::gelu ? "gelu"
                                                      : "relu"},
            {"renormalize", m.softmax_topk.renormalize},
            {"softmax_after_topk", m.softmax_topk.softmax_after_topk},
            {"capacity_factor", m.capacity_factor},
            {"drop_policy", m.drop_policy == DropPolicy::probability ? "probability" : "position"},
            {"n_shared", m.n_shared},
            {"d_shared", m.d_shared},
            {"shared_gate", m.shared_gate},
            {"aux_loss_coef", m.aux_loss_coef},
            {"z_loss_coef", m.z_loss_coef},
            {"importance_coef", m.importance_coef},
            {"load_coef", m.noisy_topk.load_coef},
            {"jitter", m.jitter},
            {"bias_update_rate", m.sigmoid_bias.bias_update_rate},
            {"route_scale", m.sigmoid_bias.route_scale},
            {"n_groups", m.sigmoid_bias.n_groups},
            {"topk_groups", m.sigmoid_bias.topk_groups},
            {"domain_experts", m.assigned.domain_experts},
            {"assign_loss_coef", m.assigned.assign_loss_coef},
            {"slots_per_expert", m.soft.slots_per_expert}};
}

}  // namespace moe::sparse
