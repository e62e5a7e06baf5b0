// Per-task metrics. See task_metrics.h.
#include "tabular/task_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "core/check.h"

namespace moe::tabular {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_args(const void* a, const void* b, int64_t n, int64_t stride, const char* what) {
    MOE_CHECK(n >= 0 && stride >= 1, what, ": n = ", n, ", stride = ", stride);
    MOE_CHECK(n == 0 || (a && b), what, ": null input");
}

}  // namespace

double auc(const float* scores, const float* labels, int64_t n, int64_t stride) {
    check_args(scores, labels, n, stride, "auc");
    // (score, label) pairs sorted by score; a NaN score (a diverged model) makes the order
    // meaningless, so the AUC is NaN rather than a sort on a broken comparison.
    std::vector<std::pair<float, bool>> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        const float s = scores[i * stride], y = labels[i * stride];
        MOE_CHECK(y == 0.0f || y == 1.0f, "auc: label ", i, " is ", y, ", expected 0 or 1");
        if (std::isnan(s)) return kNaN;
        v[size_t(i)] = {s, y == 1.0f};
    }
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    // Mann-Whitney U: every positive beats the negatives of lower score and ties half of
    // those of equal score. Walk groups of equal scores from the lowest up.
    double u = 0, neg_below = 0, pos = 0;
    for (size_t i = 0; i < v.size();) {
        size_t j = i;
        double gp = 0, gn = 0;
        for (; j < v.size() && v[j].first == v[i].first; ++j) (v[j].second ? gp : gn) += 1;
        u += gp * (neg_below + 0.5 * gn);
        neg_below += gn;
        pos += gp;
        i = j;
    }
    const double neg = neg_below;
    if (pos == 0 || neg == 0) return kNaN;
    return u / (pos * neg);
}

double mse(const float* preds, const float* targets, int64_t n, int64_t stride) {
    check_args(preds, targets, n, stride, "mse");
    if (n == 0) return kNaN;
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double d = double(preds[i * stride]) - double(targets[i * stride]);
        sum += d * d;
    }
    return sum / double(n);
}

double log_loss(const float* probs, const float* labels, int64_t n, int64_t stride) {
    check_args(probs, labels, n, stride, "log_loss");
    if (n == 0) return kNaN;
    constexpr double eps = 1e-7;
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double p = double(probs[i * stride]);
        const double q = std::isnan(p) ? p : std::clamp(p, eps, 1.0 - eps);
        const double y = double(labels[i * stride]);
        sum -= y * std::log(q) + (1.0 - y) * std::log(1.0 - q);
    }
    return sum / double(n);
}

}  // namespace moe::tabular
