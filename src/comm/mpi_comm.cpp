// The MPI group: MPI_COMM_WORLD through the MPI C API (OpenMPI).
//
// Every MPI call returns its error code (MPI_ERRORS_RETURN instead of the default "abort the
// job"), and a failure becomes moe::Error naming the operation, this rank and MPI's own text.
// Arguments are checked before any MPI call, so a bad root or an oversized count throws the
// same error on every rank instead of leaving the other ranks waiting in the collective.
//
// bytes_sent convention: each operation counts the bytes of this rank's own data that leave
// it for other ranks, counted once whatever MPI's algorithm does underneath (a tree or ring
// relays the same data several times, and how often depends on MPI's choice of algorithm):
//   alltoallv      sum of send_counts[q] over q != rank
//   alltoall_i64   n * 8 bytes for each other rank
//   allreduce_*    the n elements this rank contributes (0 in a group of one)
//   broadcast      `bytes` on the root, 0 elsewhere
//   gather         `bytes` on every rank but the root, 0 on the root
//   barrier        0
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/timer.h"
#include "comm/comm.h"

namespace moe::comm {

namespace {

// Set just before MPI_Abort, so the exit handler does not call MPI_Finalize on a job that
// is being torn down.
std::atomic<bool> g_aborted{false};

// Largest count passed to one MPI call by the chunked operations (allreduce, broadcast):
// well below MPI's int limit (2^31 - 1), and 2^28 floats = 1 GiB per call.
constexpr int64_t kMaxChunk = int64_t{1} << 28;

void finalize_at_exit() {
    if (g_aborted.load()) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

std::string mpi_error_text(int code) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
        return "MPI error code " + std::to_string(code);
    return std::string(text, static_cast<size_t>(len));
}

// Initialises MPI on the first call, unless something else already did (then that code
// owns MPI_Finalize too), and finalises it when the program exits.
void ensure_mpi_initialized() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    int provided = 0;
    if (initialized) {
        int finalized = 0;
        MPI_Finalized(&finalized);
        MOE_REQUIRE(!finalized, "make_mpi_comm: MPI has already been finalised");
        MPI_Query_thread(&provided);
    } else {
        const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
        MOE_REQUIRE(rc == MPI_SUCCESS,
                    "make_mpi_comm: MPI_Init_thread failed: ", mpi_error_text(rc));
        std::atexit(finalize_at_exit);
    }
    MOE_REQUIRE(provided >= MPI_THREAD_FUNNELED,
                "make_mpi_comm: the MPI library gives thread level ", provided,
                ", below MPI_THREAD_FUNNELED (", MPI_THREAD_FUNNELED,
                "): OpenMP worker threads would not be allowed next to MPI");
}

// "Open MPI v4.1.4, package: Debian OpenMPI, ..." -> "Open MPI v4.1.4".
std::string library_name() {
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (MPI_Get_library_version(version, &len) != MPI_SUCCESS) return "unknown MPI library";
    std::string s(version, static_cast<size_t>(len));
    const size_t end = s.find_first_of(",\n");
    if (end != std::string::npos) s.resize(end);
    return s;
}

// True when [a, a + na) and [b, b + nb) share a byte; empty ranges share none.
bool overlaps(const void* a, int64_t na, const void* b, int64_t nb) {
    if (na <= 0 || nb <= 0) return false;
    const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
    return pa < pb + static_cast<uintptr_t>(nb) && pb < pa + static_cast<uintptr_t>(na);
}

class MpiComm final : public Comm {
  public:
    MpiComm() {
        check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "make_mpi_comm",
              "MPI_Comm_set_errhandler");
        check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "make_mpi_comm", "MPI_Comm_rank");
        check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "make_mpi_comm", "MPI_Comm_size");
        const int hosts = count_hosts();
        describe_ =
            detail::concat("MPI (", library_name(), "), ", size_, size_ == 1 ? " rank" : " ranks",
                           " on ", hosts, hosts == 1 ? " host" : " hosts");
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    const char* describe() const override { return describe_.c_str(); }

    // send_counts, send_offsets, recv_counts, recv_offsets: [size] in bytes.
    void alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_offsets,
                   void* recv, const int64_t* recv_counts, const int64_t* recv_offsets) override {
        OpScope scope(counters_);
        const char* op = "alltoallv";
        for (auto* v : {&sc_, &sd_, &rc_, &rd_}) v->resize(size_);
        int64_t send_end = 0, recv_end = 0, off_rank = 0;
        for (int q = 0; q < size_; ++q) {
            sc_[q] = to_int(op, "send count for rank", q, send_counts[q]);
            sd_[q] = to_int(op, "send offset for rank", q, send_offsets[q]);
            rc_[q] = to_int(op, "receive count from rank", q, recv_counts[q]);
            rd_[q] = to_int(op, "receive offset for rank", q, recv_offsets[q]);
            if (sc_[q] > 0) send_end = std::max(send_end, send_offsets[q] + send_counts[q]);
            if (rc_[q] > 0) recv_end = std::max(recv_end, recv_offsets[q] + recv_counts[q]);
            if (q != rank_) off_rank += send_counts[q];
        }
        // MPI forbids a send buffer that overlaps the receive buffer; the single-process
        // group allows it (memmove), so the data to send is copied aside first.
        if (overlaps(send, send_end, recv, recv_end)) {
            const auto* s = static_cast<const char*>(send);
            scratch_.assign(s, s + send_end);
            send = scratch_.data();
        }
        check(MPI_Alltoallv(send, sc_.data(), sd_.data(), MPI_BYTE, recv, rc_.data(), rd_.data(),
                            MPI_BYTE, MPI_COMM_WORLD),
              op, "MPI_Alltoallv");
        counters_.bytes_sent += off_rank;
    }

    // send, recv: [size * n]
    void alltoall_i64(const int64_t* send, int64_t* recv, int64_t n) override {
        OpScope scope(counters_);
        const char* op = "alltoall_i64";
        const int count = to_int(op, "count per rank", -1, n);
        const int64_t total = n * size_;
        if (overlaps(send, total * 8, recv, total * 8)) {
            scratch_.resize(static_cast<size_t>(total * 8));
            std::memcpy(scratch_.data(), send, static_cast<size_t>(total * 8));
            send = reinterpret_cast<const int64_t*>(scratch_.data());
        }
        check(MPI_Alltoall(send, count, MPI_INT64_T, recv, count, MPI_INT64_T, MPI_COMM_WORLD), op,
              "MPI_Alltoall");
        counters_.bytes_sent += n * 8 * (size_ - 1);
    }

    // data: [n]
    void allreduce_sum(float* data, int64_t n) override { reduce_on_root(data, n, MPI_FLOAT); }
    void allreduce_sum(double* data, int64_t n) override { reduce_on_root(data, n, MPI_DOUBLE); }
    void allreduce_sum(int64_t* data, int64_t n) override {
        allreduce_exact(data, n, MPI_SUM, "allreduce_sum");
    }
    void allreduce_max(int64_t* data, int64_t n) override {
        allreduce_exact(data, n, MPI_MAX, "allreduce_max");
    }

    // data: [bytes]
    void broadcast(void* data, int64_t bytes, int root) override {
        OpScope scope(counters_);
        const char* op = "broadcast";
        require_root(op, root);
        require_nonnegative(op, "size", bytes);
        auto* p = static_cast<char*>(data);
        for (int64_t done = 0; done < bytes; done += kMaxChunk) {
            const int c = static_cast<int>(std::min(kMaxChunk, bytes - done));
            check(MPI_Bcast(p + done, c, MPI_BYTE, root, MPI_COMM_WORLD), op, "MPI_Bcast");
        }
        if (rank_ == root && size_ > 1) counters_.bytes_sent += bytes;
    }

    // send: [bytes]; recv: [size * bytes] on root (unused elsewhere).
    void gather(const void* send, int64_t bytes, void* recv, int root) override {
        OpScope scope(counters_);
        const char* op = "gather";
        require_root(op, root);
        const int count = to_int(op, "size", -1, bytes);
        if (rank_ == root && overlaps(send, bytes, recv, bytes * size_)) {
            const auto* s = static_cast<const char*>(send);
            scratch_.assign(s, s + bytes);
            send = scratch_.data();
        }
        check(MPI_Gather(send, count, MPI_BYTE, recv, count, MPI_BYTE, root, MPI_COMM_WORLD), op,
              "MPI_Gather");
        if (rank_ != root) counters_.bytes_sent += bytes;
    }

    void barrier() override {
        OpScope scope(counters_);
        check(MPI_Barrier(MPI_COMM_WORLD), "barrier", "MPI_Barrier");
    }

    [[noreturn]] void abort(int code) override {
        g_aborted.store(true);
        MPI_Abort(MPI_COMM_WORLD, code);
        std::_Exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
    }

  private:
    // MPI_Allreduce lets each rank combine the partial sums in its own order (recursive
    // doubling, rings), so float sums can differ in the last bits between ranks, and
    // replicas that should hold identical weights would drift apart. Reducing onto rank 0
    // and broadcasting its result gives every rank the same bits. The order of the sum is
    // MPI's reduction tree, fixed for a given number of ranks and length.
    // data: [n]
    template <class T>
    void reduce_on_root(T* data, int64_t n, MPI_Datatype type) {
        OpScope scope(counters_);
        const char* op = "allreduce_sum";
        require_nonnegative(op, "count", n);
        for (int64_t done = 0; done < n; done += kMaxChunk) {
            const int c = static_cast<int>(std::min(kMaxChunk, n - done));
            T* p = data + done;
            const int rc = rank_ == 0
                               ? MPI_Reduce(MPI_IN_PLACE, p, c, type, MPI_SUM, 0, MPI_COMM_WORLD)
                               : MPI_Reduce(p, nullptr, c, type, MPI_SUM, 0, MPI_COMM_WORLD);
            check(rc, op, "MPI_Reduce");
            check(MPI_Bcast(p, c, type, 0, MPI_COMM_WORLD), op, "MPI_Bcast");
        }
        if (size_ > 1) counters_.bytes_sent += n * static_cast<int64_t>(sizeof(T));
    }

    // Integer sums and maxima are exact in any order, so MPI_Allreduce is safe here.
    // data: [n]
    void allreduce_exact(int64_t* data, int64_t n, MPI_Op mpi_op, const char* op) {
        OpScope scope(counters_);
        require_nonnegative(op, "count", n);
        for (int64_t done = 0; done < n; done += kMaxChunk) {
            const int c = static_cast<int>(std::min(kMaxChunk, n - done));
            check(MPI_Allreduce(MPI_IN_PLACE, data + done, c, MPI_INT64_T, mpi_op, MPI_COMM_WORLD),
                  op, "MPI_Allreduce");
        }
        if (size_ > 1) counters_.bytes_sent += n * 8;
    }

    void check(int code, const char* op, const char* mpi_call) const {
        if (code != MPI_SUCCESS)
            MOE_FAIL(op, ": ", mpi_call, " failed on rank ", rank_, " of ", size_, ": ",
                     mpi_error_text(code));
    }

    void require_root(const char* op, int root) const {
        MOE_REQUIRE(root >= 0 && root < size_, op, ": root ", root, " is out of range on rank ",
                    rank_, " of ", size_, " (ranks 0..", size_ - 1, ")");
    }

    void require_nonnegative(const char* op, const char* what, int64_t v) const {
        MOE_REQUIRE(v >= 0, op, ": negative ", what, " ", v, " on rank ", rank_, " of ", size_);
    }

    // MPI 3 counts and displacements are C ints. peer < 0: the value is not per-rank.
    int to_int(const char* op, const char* what, int peer, int64_t v) const {
        const std::string who = peer >= 0 ? detail::concat(" ", peer) : std::string();
        MOE_REQUIRE(v >= 0, op, ": negative ", what, who, " (", v, ") on rank ", rank_, " of ",
                    size_);
        MOE_REQUIRE(v <= INT_MAX, op, ": ", what, who, " is ", v, " bytes on rank ", rank_, " of ",
                    size_, ", more than MPI's int count allows (", INT_MAX,
                    "); send it in smaller pieces");
        return static_cast<int>(v);
    }

    // Distinct processor names over all ranks (MPI_Allgather of fixed-size names).
    int count_hosts() const {
        std::vector<char> mine(MPI_MAX_PROCESSOR_NAME, '\0');
        int len = 0;
        check(MPI_Get_processor_name(mine.data(), &len), "make_mpi_comm", "MPI_Get_processor_name");
        std::vector<char> all(static_cast<size_t>(size_) * MPI_MAX_PROCESSOR_NAME);
        check(MPI_Allgather(mine.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(),
                            MPI_MAX_PROCESSOR_NAME, MPI_CHAR, MPI_COMM_WORLD),
              "make_mpi_comm", "MPI_Allgather");
        std::set<std::string> hosts;
        for (int r = 0; r < size_; ++r) {
            const char* name = all.data() + static_cast<size_t>(r) * MPI_MAX_PROCESSOR_NAME;
            hosts.emplace(name, strnlen(name, MPI_MAX_PROCESSOR_NAME));
        }
        return static_cast<int>(hosts.size());
    }

    int rank_ = 0, size_ = 1;
    std::string describe_;
    std::vector<int> sc_, sd_, rc_, rd_;  // alltoallv counts and offsets as MPI ints: [size]
    std::vector<char> scratch_;           // send data copied aside when it overlaps recv
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm() {
    ensure_mpi_initialized();
    return std::make_unique<MpiComm>();
}

}  // namespace moe::comm
