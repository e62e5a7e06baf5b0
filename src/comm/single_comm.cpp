// The single-process group: rank 0 of 1. Every collective reduces to "my data is everyone's
// data", so each operation is at most one local copy. No MPI call is made here, so programs
// that never run under mpirun do not need an MPI runtime to start.
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "core/timer.h"
#include "comm/comm.h"

namespace moe::comm {

namespace {

// memmove, not memcpy: callers may exchange a buffer in place (send == recv).
// dst, src: [bytes]
void copy_bytes(void* dst, const void* src, int64_t bytes) {
    if (bytes > 0) std::memmove(dst, src, static_cast<size_t>(bytes));
}

void require_root(const char* op, int root) {
    MOE_REQUIRE(root == 0, op, ": root ", root,
                " is not a rank of the single-process group (rank 0 of 1)");
}

class SingleComm final : public Comm {
  public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    const char* describe() const override { return "single process"; }

    // With one rank the only block goes from rank 0 to rank 0.
    // send_counts, send_offsets, recv_counts, recv_offsets: [1]
    void alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_offsets,
                   void* recv, const int64_t* recv_counts, const int64_t* recv_offsets) override {
        OpScope scope(counters_);
        MOE_REQUIRE(send_counts[0] >= 0 && send_offsets[0] >= 0 && recv_offsets[0] >= 0,
                    "alltoallv: negative count or offset on rank 0 of 1 (send count ",
                    send_counts[0], ", send offset ", send_offsets[0], ", recv offset ",
                    recv_offsets[0], ")");
        MOE_REQUIRE(recv_counts[0] == send_counts[0], "alltoallv: rank 0 of 1 sends ",
                    send_counts[0], " bytes to itself but expects to receive ", recv_counts[0]);
        copy_bytes(static_cast<char*>(recv) + recv_offsets[0],
                   static_cast<const char*>(send) + send_offsets[0], send_counts[0]);
    }

    // send, recv: [n]
    void alltoall_i64(const int64_t* send, int64_t* recv, int64_t n) override {
        OpScope scope(counters_);
        MOE_REQUIRE(n >= 0, "alltoall_i64: negative count ", n, " on rank 0 of 1");
        copy_bytes(recv, send, n * static_cast<int64_t>(sizeof(int64_t)));
    }

    // data: [n]; the sum over one rank is the data itself.
    void allreduce_sum(float* data, int64_t n) override { reduce_noop("allreduce_sum", n); }
    void allreduce_sum(double* data, int64_t n) override { reduce_noop("allreduce_sum", n); }
    void allreduce_sum(int64_t* data, int64_t n) override { reduce_noop("allreduce_sum", n); }
    void allreduce_max(int64_t* data, int64_t n) override { reduce_noop("allreduce_max", n); }

    // data: [bytes]
    void broadcast(void* data, int64_t bytes, int root) override {
        OpScope scope(counters_);
        require_root("broadcast", root);
        MOE_REQUIRE(bytes >= 0, "broadcast: negative size ", bytes, " on rank 0 of 1");
    }

    // send: [bytes]; recv: [bytes]
    void gather(const void* send, int64_t bytes, void* recv, int root) override {
        OpScope scope(counters_);
        require_root("gather", root);
        MOE_REQUIRE(bytes >= 0, "gather: negative size ", bytes, " on rank 0 of 1");
        copy_bytes(recv, send, bytes);
    }

    void barrier() override { OpScope scope(counters_); }

    [[noreturn]] void abort(int code) override { std::exit(code); }

  private:
    void reduce_noop(const char* op, int64_t n) {
        OpScope scope(counters_);
        MOE_REQUIRE(n >= 0, op, ": negative count ", n, " on rank 0 of 1");
    }
};

}  // namespace

std::unique_ptr<Comm> make_single_process_comm() {
    return std::make_unique<SingleComm>();
}

}  // namespace moe::comm
