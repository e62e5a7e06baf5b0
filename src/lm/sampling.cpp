#include "lm/sampling.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace moe::lm {

int32_t sample_token(const float* logits, int64_t V, const SamplingOptions& opt, Rng& rng,
                     std::vector<std::pair<float, int32_t>>& work) {
    MOE_CHECK(V > 0, "sample_token: empty vocabulary");
    MOE_REQUIRE(opt.temperature >= 0 && opt.top_k >= 0 && opt.top_p > 0 && opt.top_p <= 1,
                "sampling needs temperature >= 0, top_k >= 0 and top_p in (0, 1], got ",
                opt.temperature, ", ", opt.top_k, ", ", opt.top_p);
    if (opt.temperature == 0 || opt.top_k == 1)
        return int32_t(std::max_element(logits, logits + V) - logits);  // first on ties
    work.resize(size_t(V));
    for (int64_t i = 0; i < V; ++i) work[size_t(i)] = {logits[i], int32_t(i)};
    // Most likely first; ties by lower id, so the result does not depend on the sort.
    auto by_logit = [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    int64_t keep = opt.top_k > 0 ? std::min(opt.top_k, V) : V;
    std::partial_sort(work.begin(), work.begin() + keep, work.end(), by_logit);
    // Probabilities of the kept tokens at this temperature (in place of the logits).
    const double max = work[0].first;
    double sum = 0;
    for (int64_t i = 0; i < keep; ++i) {
        const double p = std::exp((double(work[size_t(i)].first) - max) / opt.temperature);
        work[size_t(i)].first = float(p);
        sum += p;
    }
    if (opt.top_p < 1) {
        double cumulative = 0;
        int64_t n = 0;
        while (n < keep && cumulative < opt.top_p * sum) cumulative += work[size_t(n++)].first;
        keep = std::max<int64_t>(1, n);
        sum = cumulative;
    }
    double u = double(rng.uniform()) * sum;
    for (int64_t i = 0; i < keep; ++i) {
        u -= work[size_t(i)].first;
        if (u < 0) return work[size_t(i)].second;
    }
    return work[size_t(keep - 1)].second;  // rounding left u at ~0
}

}  // namespace moe::lm
