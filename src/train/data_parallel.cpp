#include "train/data_parallel.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "kernels/elementwise.h"
#include "kernels/grouped_reduce.h"

namespace moe::train {

DataParallelGrads::DataParallelGrads(Arena& grads, const std::vector<RowShard>& experts,
                                     comm::Comm& comm, bool exact)
    : comm_(comm), exact_(exact), experts_(experts) {
    MOE_CHECK(grads.allocated(), "DataParallelGrads: gradient arena not allocated");
    const int R = comm.size();
    MOE_REQUIRE(!exact || (R & (R - 1)) == 0, "exact gradient sums (train.reduction_groups > 1) ",
                "need a power-of-two number of ranks, got ", R);
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
        const auto it = std::find_if(experts_.begin(), experts_.end(),
                                     [&](const RowShard& s) { return s.name == e.name; });
        entries_.push_back(
            {p, n, e.shape.rank > 0 ? e.shape[0] : 1, it == experts_.end() ? nullptr : &*it});
        if (it != experts_.end()) {
            close_run();
            continue;
        }
        replicated_count_ += n;
        if (!run_begin) run_begin = p;
        run_end = p + n;
    }
    close_run();
    if (exact_) {
        int64_t rows = 0;
        for (const RowShard& s : experts_) rows += s.global_rows;
        expert_sq_.assign(size_t(rows), 0.0);
    }
}

void DataParallelGrads::sum_replicated() {
    const int R = comm_.size();
    if (R == 1) return;
    if (!exact_) {
        for (const Range& r : replicated_) comm_.allreduce_sum(r.data, r.n);
        return;
    }
    // Gather every rank's subtree sums on rank 0 (rank order = the tree's leaf order),
    // combine them by the top of the tree, send the result back.
    const bool root = comm_.rank() == 0;
    const int64_t n = replicated_count_, bytes = n * int64_t(sizeof(float));
    send_.resize(size_t(n));
    staging_.resize(size_t(root ? R * n : n));
    int64_t at = 0;
    for (const Entry& e : entries_)
        if (!e.expert) std::copy(e.data, e.data + e.n, send_.data() + at), at += e.n;
    comm_.gather(send_.data(), bytes, root ? staging_.data() : nullptr, 0);
    if (root) kernels::pairwise_tree_sum(staging_.data(), R, n);
    comm_.broadcast(staging_.data(), bytes, 0);
    at = 0;
    for (const Entry& e : entries_)
        if (!e.expert)
            std::copy(staging_.data() + at, staging_.data() + at + e.n, e.data), at += e.n;
}

double DataParallelGrads::exact_norm_squared() {
    // Per expert (in expert order) for expert tensors, per tensor otherwise; every rank
    // fills its own experts' sums and the rest stays 0, so the sum over ranks is exact.
    std::fill(expert_sq_.begin(), expert_sq_.end(), 0.0);
    int64_t base = 0;
    for (const RowShard& s : experts_) {
        const Entry* e = nullptr;
        for (const Entry& x : entries_)
            if (x.expert == &s) e = &x;
        MOE_CHECK(e != nullptr, "DataParallelGrads: expert entry '", s.name, "' not found");
        // This rank's rows of the tensor (e->rows of them, per_row values each).
        const int64_t local_rows = e->rows, per_row = e->n / local_rows;
        for (int64_t r = 0; r < local_rows; ++r)
            expert_sq_[size_t(base + s.first_row + r)] =
                kernels::sum_squares(e->data + r * per_row, per_row);
        base += s.global_rows;
    }
    if (comm_.size() > 1 && !expert_sq_.empty())
        comm_.allreduce_sum(expert_sq_.data(), int64_t(expert_sq_.size()));
    double total = 0;
    for (const Entry& e : entries_) {
        if (!e.expert) {
            total += kernels::sum_squares(e.data, e.n);
            continue;
        }
        int64_t offset = 0;
        for (const RowShard& s : experts_) {
            if (&s == e.expert) break;
            offset += s.global_rows;
        }
        for (int64_t r = 0; r < e.expert->global_rows; ++r) total += expert_sq_[size_t(offset + r)];
    }
    return total;
}

double DataParallelGrads::clip_global_norm(double max_norm) {
    double norm;
    if (exact_) {
        norm = std::sqrt(exact_norm_squared());
    } else {
        // [replicated, experts] sums of squares; only the expert part differs between ranks.
        double sq[2] = {0, 0};
        for (const Range& r : replicated_) sq[0] += kernels::sum_squares(r.data, r.n);
        for (const Entry& e : entries_)
            if (e.expert) sq[1] += kernels::sum_squares(e.data, e.n);
        if (comm_.size() > 1) comm_.allreduce_sum(&sq[1], 1);
        norm = std::sqrt(sq[0] + sq[1]);
    }
    if (max_norm > 0 && norm > max_norm) {
        const float s = float(max_norm / (norm + 1e-6));
        for (const Range& r : replicated_) kernels::scale(r.data, s, r.n);
        for (const Entry& e : entries_)
            if (e.expert) kernels::scale(e.data, s, e.n);
    }
    return norm;
}

}  // namespace moe::train
