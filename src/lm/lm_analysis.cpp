#include "lm/lm_analysis.h"

#include <algorithm>

#include "core/check.h"

namespace moe::lm {

namespace {

// Adds the last forward's routing of every MoE layer to usage, all of whose tokens belong
// to `domain`.
void count_usage(const lm::TransformerLM& model, LmAnalysis& a, int64_t domain) {
    for (size_t i = 0; i < a.moe_layers.size(); ++i) {
        const auto* layer = model.moe_layer(a.moe_layers[i]);
        const auto* routed = layer->routing_plan();
        if (!routed) continue;  // Soft MoE mixes tokens: no per-token route to count
        const auto& plan = *routed;
        auto& row = a.usage[i][size_t(domain)];
        for (int64_t e = 0; e < plan.E; ++e) row[size_t(e)] += plan.count(e);
    }
}

}  // namespace

LmAnalysis analyze_lm(lm::TransformerLM& model, const lm::LmDataset& ds, int64_t windows_per_domain,
                      int64_t batch, bool route_by_label) {
    MOE_CHECK(windows_per_domain > 0 && batch > 0, "analyze_lm: windows and batch must be > 0");
    const auto& cfg = model.config();
    MOE_REQUIRE(!route_by_label || (cfg.ffn == "moe" && cfg.moe.router == "assigned"),
                "routing by label needs a model whose router is 'assigned'");
    LmAnalysis a;
    for (int64_t l = 0; l < cfg.n_layers; ++l)
        if (model.moe_layer(l)) a.moe_layers.push_back(l);
    a.usage.assign(a.moe_layers.size(),
                   std::vector<std::vector<int64_t>>(
                       ds.domains.size(), std::vector<int64_t>(size_t(cfg.moe.n_experts), 0)));

    std::vector<int32_t> inputs, targets, labels;
    double loss_sum = 0, acc_sum = 0;
    int64_t token_sum = 0, acc_tokens = 0;
    for (size_t d = 0; d < ds.domains.size(); ++d) {
        DomainResult r;
        r.domain = ds.domains[d];
        const std::vector<int32_t>& stream = ds.val_tokens_by_domain[d];
        const int64_t n = int64_t(stream.size());
        if (n < 2) {
            a.domains.push_back(r);  // too short to score a single token
            continue;
        }
        const int64_t T = std::min(cfg.seq_len, n - 1);
        const int64_t available = (n - 1) / T;
        const int64_t count = std::min(windows_per_domain, available);
        const int64_t stride = count > 1 ? (n - 1 - T) / (count - 1) : 0;
        double dom_loss = 0, dom_acc = 0;
        for (int64_t first = 0; first < count; first += batch) {
            const int64_t B = std::min(batch, count - first);
            inputs.resize(size_t(B * T));
            targets.resize(size_t(B * T));
            labels.assign(size_t(B * T), int32_t(d));
            for (int64_t b = 0; b < B; ++b) {
                const int64_t start = (first + b) * stride;
                std::copy_n(stream.begin() + start, T, inputs.begin() + b * T);
                std::copy_n(stream.begin() + start + 1, T, targets.begin() + b * T);
            }
            lm::ForwardOptions fo;
            fo.domains = labels.data();
            // The assigned router routes by label in training mode; jitter is its only other
            // training-only behaviour, and the recipe leaves it at 0.
            fo.training = route_by_label;
            const double loss = model.forward(inputs.data(), targets.data(), B, T, fo);
            dom_loss += loss * double(B * T);
            count_usage(model, a, int64_t(d));
            double acc = 0;
            int layers = 0;
            for (int64_t l : a.moe_layers) {
                const double la = model.moe_layer(l)->stats().losses.assign_accuracy;
                if (la >= 0) acc += la, ++layers;
            }
            if (layers > 0) dom_acc += acc / layers * double(B * T);
            r.windows += B;
            r.tokens += B * T;
        }
        r.loss = dom_loss / double(r.tokens);
        bool has_acc = false;
        for (int64_t l : a.moe_layers)
            has_acc |= model.moe_layer(l)->stats().losses.assign_accuracy >= 0;
        if (has_acc) {
            r.gate_accuracy = dom_acc / double(r.tokens);
            acc_sum += dom_acc;
            acc_tokens += r.tokens;
        }
        loss_sum += dom_loss;
        token_sum += r.tokens;
        a.domains.push_back(r);
    }
    MOE_REQUIRE(token_sum > 0, "no validation text to evaluate on (every domain is empty)");
    a.loss = loss_sum / double(token_sum);
    if (acc_tokens > 0) a.gate_accuracy = acc_sum / double(acc_tokens);
    return a;
}

}  // namespace moe::lm
