// ExpertExchange<R>: expert parallelism's all-to-all. With R ranks, rank q owns the
// E / R consecutive experts [q * El, (q + 1) * El), El = E / R. Every rank routes its own
// tokens ("home" rows, in its plan's expert-major order); the rows of each expert travel to
// the expert's owner, run there, and travel back:
//
//   home rows, plan order          rank p's rows for rank q's experts are the contiguous
//   [home_rows, d]                 block [offsets[q*El], offsets[(q+1)*El]): sent as is
//        | to_owners (MPI_Alltoallv, then a block reorder)
//   owner rows, expert-major       local expert j's rows from rank 0, then rank 1, ...: with
//   [owner_rows, d]                the batch split over ranks in order, the single-process
//                                  row order, so an expert sees the same GEMM either way
//        | to_home (the reverse reorder, then MPI_Alltoallv)
//   home rows, plan order
//
// exchange_counts() (one small all-to-all of El counts per rank pair) runs once per forward
// and sets up both directions; backward reuses it for the gradients (d_ys out, d_xs back).
// A rank whose experts get no rows receives nothing and runs nothing; a rank with no rows
// for some peer sends it nothing.
//
// Memory: the owner side is sized for the worst case, every rank sending all its rows to
// this rank's experts: size * max_home_rows rows (for dropless top-k that is the whole
// batch's rows, what a single process would hold).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/arena.h"
#include "comm/comm.h"

namespace moe::sparse {

template <class R>
class ExpertExchange {
  public:
    // E: experts of the whole layer; d: row width. E % comm.size() != 0 is an error naming
    // both numbers.
    ExpertExchange(comm::Comm& comm, int64_t E, int64_t d);

    int64_t local_experts() const { return El_; }
    int64_t first_expert() const { return int64_t(comm_.rank()) * El_; }
    int64_t max_owner_rows(int64_t max_home_rows) const { return R_ * max_home_rows; }

    // Declares the reorder staging buffer [size * max_home_rows, d] into acts (allocated by
    // the caller with the rest); bind after allocation.
    void declare_buffers(Arena& acts, const std::string& prefix, int64_t max_home_rows);
    void bind(Arena& acts);

    // offsets: [E + 1] the home plan's expert offsets. Exchanges counts with every rank and
    // prepares both directions. Collective.
    void exchange_counts(const int64_t* offsets);
    int64_t home_rows() const { return home_rows_; }
    int64_t owner_rows() const { return owner_offsets_[size_t(El_)]; }
    // [El + 1] expert offsets of the owner rows (what the expert bank runs on).
    const int64_t* owner_offsets() const { return owner_offsets_.data(); }

    // owner: [owner_rows, d] written; home: [home_rows, d]. Collective.
    void to_owners(R* owner, const R* home);
    // home: [home_rows, d] written; owner: [owner_rows, d]. Collective.
    void to_home(R* home, const R* owner);

  private:
    // Copies between the staging layout (source rank major) and the owner layout (expert
    // major); to_owner = true: staging -> owner.
    void reorder(R* owner, R* staging, bool to_owner) const;

    comm::Comm& comm_;
    int64_t E_, d_, R_, El_;
    std::string prefix_;
    R* staging_ = nullptr;  // [size * max_home_rows, d]
    int64_t max_home_rows_ = 0;
    int64_t home_rows_ = 0;

    // All [size] or [size * El]: fixed sizes, filled per forward (no allocation per step).
    std::vector<int64_t> send_counts_, recv_counts_;  // [size * El] rows per (rank, expert)
    std::vector<int64_t> send_bytes_, send_offsets_;  // [size] home side, bytes
    std::vector<int64_t> recv_bytes_, recv_offsets_;  // [size] staging side, bytes
    std::vector<int64_t> staging_rows_;               // [size] first staging row of each rank
    std::vector<int64_t> owner_offsets_;              // [El + 1]
};

extern template class ExpertExchange<float>;
extern template class ExpertExchange<double>;

}  // namespace moe::sparse
