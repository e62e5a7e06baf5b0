#include "train/data_parallel.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "kernels/elementwise.h"

namespace moe::train {

DataParallelGrads::DataParallelGrads(Arena& grads, const std::vector<std::string>& sharded,
                                     dist::Comm& comm)
    : grads_(grads), comm_(comm) {
    MOE_CHECK(grads.allocated(), "DataParallelGrads: gradient arena not allocated");
    // Entries are laid out in declaration order with alignment gaps; a run of replicated
    // entries is summed from its first byte to its last, gaps included (they hold zeros).
    float* base = grads.f32_data();
    float* run_begin = nullptr;
    float* run_end = nullptr;
    auto close_run = [&] {
        if (run_begin) replicated_.push_back({run_begin, int64_t(run_end - run_begin)});
        run_begin = run_end = nullptr;
    };
    for (const Arena::Entry& e : grads.entries()) {
        MOE_CHECK(e.dtype == DType::f32, "DataParallelGrads: entry '", e.name, "' is not f32");
        float* p = base + e.offset / sizeof(float);
        const int64_t n = e.shape.numel();
        if (std::find(sharded.begin(), sharded.end(), e.name) != sharded.end()) {
            close_run();
            sharded_.push_back({p, n});
            continue;
        }
        if (!run_begin) run_begin = p;
        run_end = p + n;
    }
    close_run();
}

void DataParallelGrads::sum_replicated() {
    if (comm_.size() == 1) return;
    for (const Range& r : replicated_) comm_.allreduce_sum(r.data, r.n);
}

double DataParallelGrads::clip_global_norm(double max_norm) {
    // [replicated, sharded] sums of squares; only the sharded part differs between ranks.
    double sq[2] = {0, 0};
    for (const Range& r : replicated_) sq[0] += kernels::sum_squares(r.data, r.n);
    for (const Range& r : sharded_) sq[1] += kernels::sum_squares(r.data, r.n);
    if (comm_.size() > 1) comm_.allreduce_sum(&sq[1], 1);
    const double norm = std::sqrt(sq[0] + sq[1]);
    if (max_norm > 0 && norm > max_norm) {
        const float s = float(max_norm / (norm + 1e-6));
        for (const Range& r : replicated_) kernels::scale(r.data, s, r.n);
        for (const Range& r : sharded_) kernels::scale(r.data, s, r.n);
    }
    return norm;
}

}  // namespace moe::train
