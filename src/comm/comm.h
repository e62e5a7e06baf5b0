// Comm: the process group a distributed run talks over. Two implementations:
//   - single-process (size 1): every operation is a local copy; no MPI call is made, so a
//     program that never runs under mpirun does not need an MPI runtime to work;
//   - MPI (OpenMPI): MPI_COMM_WORLD, chosen when the process was started by mpirun.
// Everything above this interface (expert exchange, gradient averaging, checkpoints) is
// written once and runs unchanged on both.
//
// All operations are collective and blocking: every rank calls them in the same order.
// Errors (an MPI failure, a peer that died) are thrown as moe::Error naming the operation
// and the rank, never a silent hang or abort.
//
// The group counts what it moves and how long it waits, so the trainer can report bytes
// sent per rank per step and communication against compute time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/timer.h"

namespace moe::comm {

// Bytes sent to other ranks (a rank's data to itself is not counted) and seconds spent
// inside operations, since construction or the last reset().
struct CommCounters {
    int64_t bytes_sent = 0;
    double seconds = 0;
    int64_t calls = 0;
};

class Comm {
  public:
    virtual ~Comm() = default;

    virtual int rank() const = 0;
    virtual int size() const = 0;
    // "single process" or "MPI (OpenMPI 4.1.4), 4 ranks on 2 hosts"...
    virtual const char* describe() const = 0;

    // Sends send_counts[q] bytes from send + send_offsets[q] to each rank q, and receives
    // recv_counts[p] bytes from each rank p into recv + recv_offsets[p]. counts and offsets:
    // [size()] arrays, in bytes. recv_counts must equal what each peer sends (exchange the
    // counts first with alltoall_i64).
    virtual void alltoallv(const void* send, const int64_t* send_counts,
                           const int64_t* send_offsets, void* recv, const int64_t* recv_counts,
                           const int64_t* recv_offsets) = 0;
    // send: [size() * n] (block q goes to rank q); recv: [size() * n] (block p came from p).
    virtual void alltoall_i64(const int64_t* send, int64_t* recv, int64_t n) = 0;

    // In-place sums over all ranks of data[0, n). The float and double versions are summed
    // once, on rank 0 (in MPI's reduction order, fixed for a given number of ranks and n), and
    // that result is sent to every rank, so every rank gets bit-identical results.
    virtual void allreduce_sum(float* data, int64_t n) = 0;
    virtual void allreduce_sum(double* data, int64_t n) = 0;
    virtual void allreduce_sum(int64_t* data, int64_t n) = 0;
    // In-place maximum over all ranks (e.g. agreeing on whether any rank wants to stop).
    virtual void allreduce_max(int64_t* data, int64_t n) = 0;

    // Copies `bytes` bytes at data on rank `root` to data on every rank.
    virtual void broadcast(void* data, int64_t bytes, int root) = 0;
    // Concatenates each rank's `bytes` bytes at send into recv on rank `root` (rank order);
    // recv: [size() * bytes], used on root only (may be null elsewhere).
    virtual void gather(const void* send, int64_t bytes, void* recv, int root) = 0;
    virtual void barrier() = 0;
    // Ends every rank of the job with `code` (MPI_Abort); used when one rank fails, so the
    // others do not wait forever in the next collective. Single process: std::exit(code).
    [[noreturn]] virtual void abort(int code) = 0;

    const CommCounters& counters() const { return counters_; }
    void reset_counters() { counters_ = {}; }

  protected:
    // Counts one call and the seconds spent in it, also when the operation throws.
    class OpScope {
      public:
        explicit OpScope(CommCounters& c) : c_(c) {}
        ~OpScope() {
            c_.calls++;
            c_.seconds += timer_.seconds();
        }

      private:
        CommCounters& c_;
        Timer timer_;
    };

    CommCounters counters_;
};

// The single-process group (rank 0 of 1).
std::unique_ptr<Comm> make_single_process_comm();

// True when this process was started by mpirun (OpenMPI sets OMPI_COMM_WORLD_SIZE).
bool launched_by_mpirun();

// MPI_COMM_WORLD; initialises MPI (thread level "funneled": only the main thread calls MPI)
// on first use and finalises it at exit. Errors return codes that become moe::Error.
std::unique_ptr<Comm> make_mpi_comm();

// make_mpi_comm() under mpirun, otherwise make_single_process_comm().
std::unique_ptr<Comm> make_world_comm();

}  // namespace moe::comm
