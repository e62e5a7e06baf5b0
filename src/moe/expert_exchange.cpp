// Expert parallelism's all-to-all (see expert_exchange.h).
#include "moe/expert_exchange.h"

#include <cstring>

#include "core/check.h"
#include "core/parallel_for.h"

namespace moe::sparse {

template <class R>
ExpertExchange<R>::ExpertExchange(comm::Comm& comm, int64_t E, int64_t d)
    : comm_(comm), E_(E), d_(d), R_(comm.size()) {
    MOE_REQUIRE(E % R_ == 0, "expert parallelism: moe.n_experts = ", E,
                " is not divisible by the number of ranks (", R_,
                "); each rank must own the same number of experts");
    MOE_CHECK(d > 0, "ExpertExchange: bad width d=", d);
    El_ = E / R_;
    send_counts_.assign(size_t(R_ * El_), 0);
    recv_counts_.assign(size_t(R_ * El_), 0);
    send_bytes_.assign(size_t(R_), 0);
    send_offsets_.assign(size_t(R_), 0);
    recv_bytes_.assign(size_t(R_), 0);
    recv_offsets_.assign(size_t(R_), 0);
    staging_rows_.assign(size_t(R_ + 1), 0);
    owner_offsets_.assign(size_t(El_ + 1), 0);
}

template <class R>
void ExpertExchange<R>::declare_buffers(Arena& acts, const std::string& prefix,
                                        int64_t max_home_rows) {
    prefix_ = prefix;
    max_home_rows_ = max_home_rows;
    // Only needed when rows must be reordered (more than one expert per rank).
    acts.add(prefix + "staging_scratch", {El_ > 1 ? max_owner_rows(max_home_rows) : 1, d_},
             dtype_of<R>());
}

template <class R>
void ExpertExchange<R>::bind(Arena& acts) {
    staging_ = acts.get(prefix_ + "staging_scratch").template ptr<R>();
}

template <class R>
void ExpertExchange<R>::exchange_counts(const int64_t* offsets) {
    // offsets: [E + 1]
    const int64_t row_bytes = d_ * int64_t(sizeof(R));
    home_rows_ = offsets[E_];
    MOE_CHECK(home_rows_ <= max_home_rows_, "ExpertExchange: ", home_rows_, " rows, more than the ",
              max_home_rows_, " declared");
    for (int64_t q = 0; q < R_; ++q) {
        for (int64_t j = 0; j < El_; ++j) {
            const int64_t e = q * El_ + j;
            send_counts_[size_t(e)] = offsets[e + 1] - offsets[e];
        }
        send_offsets_[size_t(q)] = offsets[q * El_] * row_bytes;
        send_bytes_[size_t(q)] = (offsets[(q + 1) * El_] - offsets[q * El_]) * row_bytes;
    }
    comm_.alltoall_i64(send_counts_.data(), recv_counts_.data(), El_);

    // Staging: rank p's rows (its rows for each of my experts, in expert order) at
    // staging_rows_[p]. Owner: expert j's rows from every rank, in rank order.
    for (int64_t p = 0; p < R_; ++p) {
        int64_t n = 0;
        for (int64_t j = 0; j < El_; ++j) n += recv_counts_[size_t(p * El_ + j)];
        staging_rows_[size_t(p + 1)] = staging_rows_[size_t(p)] + n;
        recv_offsets_[size_t(p)] = staging_rows_[size_t(p)] * row_bytes;
        recv_bytes_[size_t(p)] = n * row_bytes;
    }
    for (int64_t j = 0; j < El_; ++j) {
        int64_t n = 0;
        for (int64_t p = 0; p < R_; ++p) n += recv_counts_[size_t(p * El_ + j)];
        owner_offsets_[size_t(j + 1)] = owner_offsets_[size_t(j)] + n;
    }
    MOE_CHECK(owner_rows() <= max_owner_rows(max_home_rows_), "ExpertExchange: received ",
              owner_rows(), " rows, more than ", max_owner_rows(max_home_rows_));
}

template <class R>
void ExpertExchange<R>::reorder(R* owner, R* staging, bool to_owner) const {
    // owner: [owner_rows, d]; staging: [owner_rows, d] (rank-major)
    const int64_t blocks = R_ * El_;
    parallel_for_dynamic(blocks, owner_rows() * d_ >= 65536, [&](int64_t b) {
        const int64_t p = b / El_, j = b % El_;
        const int64_t n = recv_counts_[size_t(b)];
        if (n == 0) return;
        int64_t s = staging_rows_[size_t(p)];
        for (int64_t jj = 0; jj < j; ++jj) s += recv_counts_[size_t(p * El_ + jj)];
        int64_t o = owner_offsets_[size_t(j)];
        for (int64_t pp = 0; pp < p; ++pp) o += recv_counts_[size_t(pp * El_ + j)];
        R* dst = to_owner ? owner + o * d_ : staging + s * d_;
        const R* src = to_owner ? staging + s * d_ : owner + o * d_;
        std::memcpy(dst, src, size_t(n * d_) * sizeof(R));
    });
}

template <class R>
void ExpertExchange<R>::to_owners(R* owner, const R* home) {
    // owner: [owner_rows, d] written; home: [home_rows, d]
    // With one expert per rank the staging layout is the owner layout: receive in place.
    R* dst = El_ == 1 ? owner : staging_;
    comm_.alltoallv(home, send_bytes_.data(), send_offsets_.data(), dst, recv_bytes_.data(),
                    recv_offsets_.data());
    if (El_ > 1) reorder(owner, staging_, true);
}

template <class R>
void ExpertExchange<R>::to_home(R* home, const R* owner) {
    // home: [home_rows, d] written; owner: [owner_rows, d]
    const R* src = owner;
    if (El_ > 1) {
        reorder(const_cast<R*>(owner), staging_, false);  // reads owner only
        src = staging_;
    }
    comm_.alltoallv(src, recv_bytes_.data(), recv_offsets_.data(), home, send_bytes_.data(),
                    send_offsets_.data());
}

template class ExpertExchange<float>;
template class ExpertExchange<double>;

}  // namespace moe::sparse
