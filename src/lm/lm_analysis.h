// Evaluating a trained language model domain by domain, and recording which experts each
// domain's tokens were routed to: the figures behind `moe eval` and `moe inspect`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lm/lm_dataset.h"
#include "lm/transformer_lm.h"

namespace moe::lm {

struct DomainResult {
    std::string domain;
    int64_t windows = 0;        // evaluation windows read
    int64_t tokens = 0;         // tokens scored
    double loss = 0;            // mean cross-entropy per token (nats)
    double gate_accuracy = -1;  // assigned router: share of tokens whose domain the gate predicts
};

struct LmAnalysis {
    double loss = 0;  // token-weighted over all domains
    double gate_accuracy = -1;
    std::vector<DomainResult> domains;
    std::vector<int64_t> moe_layers;  // model layer index of each MoE layer
    // usage[i][d][e]: (token, expert) rows of domain d sent to expert e in MoE layer i.
    std::vector<std::vector<std::vector<int64_t>>> usage;
};

// Runs up to windows_per_domain windows (seq_len tokens, fewer for a short domain) of each
// domain's validation text, `batch` windows per forward, in evaluation mode (no noise; the
// assigned router routes by its gate and is scored against the true domain).
// route_by_label: the assigned router routes every token by its true domain, as in
// training (an oracle gate), which separates the experts' quality from the gate's accuracy.
LmAnalysis analyze_lm(lm::TransformerLM& model, const lm::LmDataset& ds, int64_t windows_per_domain,
                      int64_t batch, bool route_by_label = false);

}  // namespace moe::lm
