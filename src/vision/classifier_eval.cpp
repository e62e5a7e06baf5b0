#include "vision/classifier_eval.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"
#include "vision/vision_data.h"

namespace moe::vision {

double ClassifierEval::class_accuracy(int64_t k) const {
    int64_t total = 0;
    for (int64_t j = 0; j < n_classes; ++j) total += confusion[size_t(k * n_classes + j)];
    return total == 0 ? std::numeric_limits<double>::quiet_NaN()
                      : double(confusion[size_t(k * n_classes + k)]) / double(total);
}

// Images go through in chunks of up to opt.batch x ranks; each rank takes its share of a
// chunk. Every rank runs a forward for every chunk (expert parallelism needs all of them):
// a rank short of real images repeats one with its label masked (-1), and only real images
// are counted.
ClassifierEval evaluate_classifier(VisionModel& model, const ImageSet& set,
                                   const std::vector<int64_t>& indices, const Normalization& norm,
                                   const EvalOptions& opt) {
    const VisionModelConfig& cfg = model.config();
    const int64_t K = cfg.n_classes, T = model.tokens_per_image();
    const int64_t ranks = opt.group ? opt.group->size() : 1;
    const int64_t rank = opt.group ? opt.group->rank() : 0;
    const int64_t per_rank_max = opt.batch;
    MOE_CHECK(per_rank_max > 0, "evaluate_classifier: batch must be > 0");
    MOE_REQUIRE(!indices.empty(), "no images to evaluate on");
    const bool assigned = cfg.ffn == "moe" && cfg.moe.router == "assigned";
    MOE_REQUIRE(!opt.route_by_label || assigned,
                "routing by label needs a model whose router is 'assigned'");

    ClassifierEval r;
    r.n_classes = K;
    r.confusion.assign(size_t(K * K), 0);
    for (int64_t l = 0; l < cfg.n_layers; ++l)
        if (model.moe_layer(l)) r.moe_blocks.push_back(l);
    const int64_t E = cfg.moe.n_experts;
    r.class_expert.assign(r.moe_blocks.size(), std::vector<int64_t>(size_t(K * E), 0));

    const int64_t H = cfg.height, W = cfg.width, C = cfg.channels;
    const size_t pr = static_cast<size_t>(per_rank_max);
    std::vector<float> x(pr * size_t(H * W * C));
    std::vector<int32_t> labels(pr), domains(pr);
    std::vector<int64_t> mine(pr);
    double loss_sum = 0, acc_sum = 0, acc_tokens = 0;
    const int64_t n = int64_t(indices.size()), chunk = per_rank_max * ranks;
    for (int64_t done = 0; done < n; done += chunk) {
        const int64_t b = std::min(chunk, n - done);
        const int64_t per_rank = (b + ranks - 1) / ranks;
        const int64_t real = std::clamp<int64_t>(b - rank * per_rank, 0, per_rank);
        for (int64_t i = 0; i < per_rank; ++i)  // padding repeats the chunk's first image
            mine[size_t(i)] = indices[size_t(done + (i < real ? rank * per_rank + i : 0))];
        fill_eval_batch(set, norm, mine.data(), per_rank, x.data(), labels.data());
        for (int64_t i = 0; i < per_rank; ++i)
            domains[size_t(i)] = domain_of_class(opt.domains, labels[size_t(i)]);
        std::fill(labels.begin() + real, labels.begin() + per_rank, -1);
        VisionForwardOptions fo;
        fo.domains = opt.domains == "none" ? nullptr : domains.data();
        // The assigned router routes by label in training mode; jitter is its only other
        // training-only behaviour.
        fo.training = opt.route_by_label;
        const double mean = model.forward(x.data(), labels.data(), per_rank, fo);
        loss_sum += mean * double(real);
        const float* probs = model.probs();
        for (int64_t i = 0; i < real; ++i) {
            const float* p = probs + i * K;
            const int64_t pred = std::max_element(p, p + K) - p;
            r.confusion[size_t(labels[size_t(i)] * K + pred)]++;
        }
        for (size_t m = 0; m < r.moe_blocks.size(); ++m) {
            const auto* layer = model.moe_layer(r.moe_blocks[m]);
            if (layer->stats().losses.assign_accuracy >= 0) {
                acc_sum += layer->stats().losses.assign_accuracy * double(per_rank * T);
                acc_tokens += double(per_rank * T);
            }
            const auto* plan = layer->routing_plan();
            if (!plan) continue;  // Soft MoE: no per-token route
            auto& ce = r.class_expert[m];
            for (int64_t e = 0; e < plan->E; ++e)
                for (int64_t row = plan->offsets[e]; row < plan->offsets[e + 1]; ++row) {
                    const int64_t img = plan->row_token[row] / T;
                    if (img < real) ce[size_t(labels[size_t(img)] * E + e)]++;
                }
        }
    }
    // Sum over the ranks: loss, counts, the gate's accuracy.
    std::vector<double> sums = {loss_sum, acc_sum, acc_tokens};
    for (int64_t c : r.confusion) sums.push_back(double(c));
    for (const auto& ce : r.class_expert)
        for (int64_t c : ce) sums.push_back(double(c));
    if (opt.group && ranks > 1) opt.group->allreduce_sum(sums.data(), int64_t(sums.size()));
    size_t at = 3;
    for (int64_t& c : r.confusion) c = int64_t(sums[at++]);
    for (auto& ce : r.class_expert)
        for (int64_t& c : ce) c = int64_t(sums[at++]);
    r.images = n;
    r.loss = sums[0] / double(n);
    int64_t right = 0;
    for (int64_t k = 0; k < K; ++k) right += r.confusion[size_t(k * K + k)];
    r.accuracy = double(right) / double(n);
    if (sums[2] > 0) r.gate_accuracy = sums[1] / sums[2];
    return r;
}

}  // namespace moe::vision
