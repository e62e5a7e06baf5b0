// Per-task metrics of a multi-task model, each with a plain definition.
//
//   auc:  area under the ROC curve = P(score of a random positive > score of a random
//         negative), ties counted 1/2 (the Mann-Whitney U statistic over n_pos * n_neg).
//         Computed by sorting, O(n log n). NaN when either class is absent.
//   mse:  mean of (prediction - target)^2;  rmse = sqrt(mse).
//   log_loss: mean binary cross-entropy of probabilities clamped to [1e-7, 1 - 1e-7].
#pragma once

#include <cstdint>

namespace moe::tabular {

// scores: [n] (any monotone score), labels: [n] 0 or 1; stride: distance between
// consecutive entries of both (a column of a row-major [n, K] matrix).
double auc(const float* scores, const float* labels, int64_t n, int64_t stride = 1);
double mse(const float* preds, const float* targets, int64_t n, int64_t stride = 1);
double log_loss(const float* probs, const float* labels, int64_t n, int64_t stride = 1);

}  // namespace moe::tabular
