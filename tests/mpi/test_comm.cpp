// The MPI group on 2 and 4 ranks (mpirun -np N): every collective against values each rank
// can compute on its own, bit-identical float sums, the byte counters, and argument errors
// that throw on every rank without stalling the job.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "mpi_test_world.h"
#include "test_support.h"

namespace moe::comm {
namespace {

using moe::test::all_ranks;
using moe::test::same_on_all_ranks;
using moe::test::throws_error_with;
using moe::test::world;

class MpiComm : public ::testing::Test {
  protected:
    void SetUp() override { c.reset_counters(); }
    Comm& c = world();
    const int me = c.rank();
    const int n = c.size();
};

// Bytes rank p sends rank q: uneven, with zeros. The last rank receives nothing at all, and
// rank 0 sends nothing to rank 1 (with 2 ranks, rank 0 then sends only to itself).
int64_t count(int p, int q, int size) {
    if (q == size - 1) return 0;
    if (p == 0 && q == 1) return 0;
    return 1 + (3 * p + 5 * q) % 7;
}

// Byte i of the block from rank p to rank q.
char byte_of(int p, int q, int64_t i) {
    return static_cast<char>(p * 59 + q * 13 + i * 7 + 1);
}

TEST_F(MpiComm, RanksAgreeWithMpirun) {
    EXPECT_TRUE(launched_by_mpirun());
    EXPECT_EQ(std::atoi(std::getenv("OMPI_COMM_WORLD_RANK")), me);
    EXPECT_EQ(std::atoi(std::getenv("OMPI_COMM_WORLD_SIZE")), n);
    const std::string d = c.describe();
    EXPECT_NE(d.find("MPI (Open MPI"), std::string::npos) << d;
    EXPECT_NE(d.find(std::to_string(n) + " ranks on "), std::string::npos) << d;
    // make_world_comm() picks MPI under mpirun (its constructor is collective: every rank).
    auto again = make_world_comm();
    EXPECT_EQ(again->size(), n);
    EXPECT_EQ(again->rank(), me);
}

TEST_F(MpiComm, AlltoallvUnevenZeroCountsAndOffsets) {
    // Send blocks in reverse rank order from offset 4, 3 bytes apart; receive them in rank
    // order from offset 2, 5 bytes apart. Gaps must stay untouched.
    std::vector<int64_t> send_counts(n), send_offsets(n), recv_offsets(n), expect_recv(n);
    int64_t off = 4;
    for (int q = n - 1; q >= 0; --q) {
        send_counts[q] = count(me, q, n);
        send_offsets[q] = off;
        off += send_counts[q] + 3;
    }
    std::vector<char> send(off, '\xAA');
    for (int q = 0; q < n; ++q)
        for (int64_t i = 0; i < send_counts[q]; ++i) send[send_offsets[q] + i] = byte_of(me, q, i);

    // As real callers do: learn the receive counts from the senders first.
    std::vector<int64_t> recv_counts(n, -1);
    c.alltoall_i64(send_counts.data(), recv_counts.data(), 1);
    off = 2;
    for (int p = 0; p < n; ++p) {
        expect_recv[p] = count(p, me, n);
        recv_offsets[p] = off;
        off += expect_recv[p] + 5;
    }
    EXPECT_EQ(recv_counts, expect_recv);
    std::vector<char> recv(off + 7, '\xEE');
    std::vector<char> expect = recv;
    for (int p = 0; p < n; ++p)
        for (int64_t i = 0; i < expect_recv[p]; ++i)
            expect[recv_offsets[p] + i] = byte_of(p, me, i);

    c.alltoallv(send.data(), send_counts.data(), send_offsets.data(), recv.data(),
                expect_recv.data(), recv_offsets.data());
    EXPECT_EQ(recv, expect);
    if (me == n - 1) {
        EXPECT_EQ(std::count(recv.begin(), recv.end(), '\xEE'), static_cast<int64_t>(recv.size()));
    }

    int64_t off_rank = 8 * (n - 1);  // the alltoall_i64 of one count per peer
    for (int q = 0; q < n; ++q)
        if (q != me) off_rank += send_counts[q];
    EXPECT_EQ(c.counters().bytes_sent, off_rank);
    EXPECT_EQ(c.counters().calls, 2);
}

TEST_F(MpiComm, AlltoallvSendAndRecvMayShareABuffer) {
    // Block q (4 bytes) of buf goes to rank q; block p of the same buf is overwritten with
    // what rank p sent. MPI forbids the overlap; the group copies the send data aside.
    std::vector<int64_t> counts(n, 4), offsets(n);
    std::vector<char> buf(4 * n);
    for (int q = 0; q < n; ++q) {
        offsets[q] = 4 * q;
        for (int i = 0; i < 4; ++i) buf[4 * q + i] = byte_of(me, q, i);
    }
    c.alltoallv(buf.data(), counts.data(), offsets.data(), buf.data(), counts.data(),
                offsets.data());
    for (int p = 0; p < n; ++p)
        for (int i = 0; i < 4; ++i) EXPECT_EQ(buf[4 * p + i], byte_of(p, me, i)) << p << " " << i;
}

TEST_F(MpiComm, AlltoallI64) {
    const int64_t k = 3;
    std::vector<int64_t> send(n * k), recv(n * k, -1);
    for (int q = 0; q < n; ++q)
        for (int j = 0; j < k; ++j) send[q * k + j] = (int64_t{me} << 40) + q * 10 + j;
    c.alltoall_i64(send.data(), recv.data(), k);
    for (int p = 0; p < n; ++p)
        for (int j = 0; j < k; ++j)
            EXPECT_EQ(recv[p * k + j], (int64_t{p} << 40) + me * 10 + j) << p << " " << j;
    EXPECT_EQ(c.counters().bytes_sent, 8 * k * (n - 1));
}

// Values spread over 9 orders of magnitude, so that float sums depend on their order.
template <class T>
std::vector<T> spread_values(int rank, int64_t len) {
    const std::vector<double> z = moe::test::random_normal(len, 1000 + rank);
    std::vector<T> v(len);
    for (int64_t j = 0; j < len; ++j)
        v[j] = static_cast<T>(z[j] * std::pow(10.0, (j + rank) % 9 - 4));
    return v;
}

// allreduce_sum of spread values: bit-identical on every rank, and within rounding of the
// exact sum. On 3+ ranks also checks the test means something: summing the contributions
// in two orders gives different bits somewhere.
template <class T>
void check_float_sum(Comm& c, double eps) {
    const int64_t len = 1000;
    const int n = c.size(), me = c.rank();
    const std::vector<T> mine = spread_values<T>(me, len);
    std::vector<T> data = mine;
    c.allreduce_sum(data.data(), len);
    EXPECT_EQ(c.counters().bytes_sent, static_cast<int64_t>(len * sizeof(T)));
    EXPECT_TRUE(same_on_all_ranks(data.data(), len * sizeof(T)));
    if (me != 0) return;
    std::vector<std::vector<T>> all(n);
    for (int r = 0; r < n; ++r) all[r] = spread_values<T>(r, len);
    int64_t order_matters = 0;
    for (int64_t j = 0; j < len; ++j) {
        double exact = 0, magnitude = 0;
        T forward = 0, backward = 0;
        for (int r = 0; r < n; ++r) {
            exact += static_cast<double>(all[r][j]);
            magnitude += std::abs(static_cast<double>(all[r][j]));
            forward += all[r][j];
            backward += all[n - 1 - r][j];
        }
        EXPECT_NEAR(data[j], exact, n * eps * magnitude) << "element " << j;
        order_matters += forward != backward;
    }
    if (n >= 3) {
        EXPECT_GT(order_matters, 0);
    }
}

TEST_F(MpiComm, AllreduceSumFloatIsBitIdenticalOnEveryRank) {
    check_float_sum<float>(c, 0x1p-23);
}

TEST_F(MpiComm, AllreduceSumDoubleIsBitIdenticalOnEveryRank) {
    check_float_sum<double>(c, 0x1p-52);
}

TEST_F(MpiComm, AllreduceSumInt64IsExact) {
    // Around 2^40 per rank: a float or double detour would lose the low bits.
    std::vector<int64_t> data(5);
    for (int j = 0; j < 5; ++j) data[j] = (int64_t{me + 1} << 40) + j * me - 7;
    c.allreduce_sum(data.data(), 5);
    for (int j = 0; j < 5; ++j) {
        int64_t expect = 0;
        for (int r = 0; r < n; ++r) expect += (int64_t{r + 1} << 40) + j * r - 7;
        EXPECT_EQ(data[j], expect) << j;
    }
}

TEST_F(MpiComm, AllreduceMax) {
    // Element j peaks on rank j % n; the last element is negative everywhere.
    const int len = 6;
    std::vector<int64_t> data(len + 1);
    for (int j = 0; j < len; ++j) data[j] = me == j % n ? 1000 + j : -(me * 10 + j);
    data[len] = -5 * (me + 1);
    c.allreduce_max(data.data(), len + 1);
    for (int j = 0; j < len; ++j) EXPECT_EQ(data[j], 1000 + j) << j;
    EXPECT_EQ(data[len], -5);
}

TEST_F(MpiComm, EmptyOperationsAreFine) {
    c.allreduce_sum(static_cast<float*>(nullptr), 0);
    c.allreduce_max(nullptr, 0);
    c.broadcast(nullptr, 0, n - 1);
    std::vector<int64_t> zeros(n, 0);
    c.alltoallv(nullptr, zeros.data(), zeros.data(), nullptr, zeros.data(), zeros.data());
    EXPECT_EQ(c.counters().calls, 4);
    EXPECT_EQ(c.counters().bytes_sent, 0);
}

TEST_F(MpiComm, BroadcastFromNonZeroRoots) {
    for (int root : {n - 1, 1}) {
        c.reset_counters();
        std::vector<char> data(1001, 0), expect(1001);
        for (int i = 0; i < 1001; ++i) expect[i] = static_cast<char>(i * 31 + root);
        if (me == root) data = expect;
        c.broadcast(data.data(), 1001, root);
        EXPECT_EQ(data, expect) << "root " << root;
        EXPECT_EQ(c.counters().bytes_sent, me == root ? 1001 : 0);
    }
}

TEST_F(MpiComm, GatherToRootsInRankOrder) {
    for (int root : {1, 0}) {
        c.reset_counters();
        char send[5];
        for (int i = 0; i < 5; ++i) send[i] = static_cast<char>(me * 10 + i);
        std::vector<char> recv(me == root ? 5 * n : 0);
        c.gather(send, 5, me == root ? recv.data() : nullptr, root);
        if (me == root) {
            for (int r = 0; r < n; ++r)
                for (int i = 0; i < 5; ++i) EXPECT_EQ(recv[5 * r + i], r * 10 + i);
        }
        EXPECT_EQ(c.counters().bytes_sent, me == root ? 0 : 5);
    }
}

TEST_F(MpiComm, BarrierWaitsForEveryRank) {
    // Ranks other than 0 write their file late; rank 0 looks only after the barrier, so a
    // barrier that did not wait would find files missing.
    int64_t pid0 = getpid();
    c.broadcast(&pid0, sizeof pid0, 0);
    auto path = [&](int r) {
        return ::testing::TempDir() + "moe_barrier_" + std::to_string(pid0) + "_" +
               std::to_string(r);
    };
    if (me != 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::FILE* f = std::fopen(path(me).c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
    c.reset_counters();
    c.barrier();
    EXPECT_EQ(c.counters().calls, 1);
    EXPECT_EQ(c.counters().bytes_sent, 0);
    if (me == 0) {
        for (int r = 0; r < n; ++r) EXPECT_EQ(access(path(r).c_str(), F_OK), 0) << path(r);
    }
    c.barrier();  // rank 0 has looked
    std::remove(path(me).c_str());
}

TEST_F(MpiComm, CountersAddUpAndReset) {
    std::vector<int64_t> i64(2 * n, 1), out(2 * n);
    std::vector<float> f(3, 1.0f);
    char bytes[10] = {};
    std::vector<char> gathered(me == 0 ? 4 * n : 0);
    c.alltoall_i64(i64.data(), out.data(), 2);
    c.allreduce_sum(f.data(), 3);
    c.broadcast(bytes, 10, 0);
    c.gather(bytes, 4, gathered.data(), 0);
    c.barrier();
    EXPECT_EQ(c.counters().calls, 5);
    EXPECT_EQ(c.counters().bytes_sent, 16 * (n - 1) + 12 + (me == 0 ? 10 : 4));
    EXPECT_GT(c.counters().seconds, 0.0);
    c.reset_counters();
    EXPECT_EQ(c.counters().calls, 0);
    EXPECT_EQ(c.counters().bytes_sent, 0);
    EXPECT_EQ(c.counters().seconds, 0.0);
}

TEST_F(MpiComm, BadArgumentsThrowOnEveryRankWithoutStallingTheJob) {
    // Checked before any MPI call, so every rank throws the same error and none is left
    // waiting in a collective.
    const std::string where = "rank " + std::to_string(me) + " of " + std::to_string(n);
    char byte = 0;
    EXPECT_TRUE(throws_error_with([&] { c.broadcast(&byte, 1, n); },
                                  {"broadcast", "root " + std::to_string(n), where}));
    EXPECT_TRUE(throws_error_with([&] { c.broadcast(&byte, 1, -1); }, {"broadcast", where}));
    EXPECT_TRUE(throws_error_with([&] { c.gather(&byte, 1, nullptr, n + 3); }, {"gather", where}));
    std::vector<int64_t> counts(n, 0), offsets(n, 0);
    counts[0] = -1;
    EXPECT_TRUE(throws_error_with(
        [&] {
            c.alltoallv(&byte, counts.data(), offsets.data(), &byte, counts.data(), offsets.data());
        },
        {"alltoallv", "negative", where}));
    counts[0] = int64_t{1} << 31;  // 2 GiB: one more than MPI's int count allows
    EXPECT_TRUE(throws_error_with(
        [&] {
            c.alltoallv(&byte, counts.data(), offsets.data(), &byte, counts.data(), offsets.data());
        },
        {"alltoallv", "2147483648", "MPI's int", where}));
    int64_t unused = 0;
    EXPECT_TRUE(throws_error_with([&] { c.allreduce_sum(&unused, -2); }, {"allreduce_sum", where}));
    // The group still works afterwards.
    int64_t one = 1;
    c.allreduce_sum(&one, 1);
    EXPECT_EQ(one, n);
    EXPECT_TRUE(all_ranks(true));
}

TEST_F(MpiComm, MpiFailureBecomesErrorNamingOpRankAndMpiText) {
    // Every rank sends 64 bytes to every rank but expects only 4 from each: MPI itself
    // reports the truncation (on every rank, as every rank receives), through the error
    // code that MPI_ERRORS_RETURN hands back instead of aborting the job.
    std::vector<int64_t> send_counts(n, 64), recv_counts(n, 4), offsets(n);
    for (int q = 0; q < n; ++q) offsets[q] = 64 * q;
    std::vector<char> send(64 * n, 1), recv(64 * n);
    EXPECT_TRUE(throws_error_with(
        [&] {
            c.alltoallv(send.data(), send_counts.data(), offsets.data(), recv.data(),
                        recv_counts.data(), offsets.data());
        },
        {"alltoallv", "MPI_Alltoallv failed",
         "rank " + std::to_string(me) + " of " + std::to_string(n), "MPI_ERR_TRUNCATE"}));
    int64_t one = 1;  // and the group still works
    c.allreduce_sum(&one, 1);
    EXPECT_EQ(one, n);
}

}  // namespace
}  // namespace moe::comm
