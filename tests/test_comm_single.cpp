// The single-process group: every collective is a local copy (or nothing), errors name the
// operation, and the counters count calls but no bytes (nothing leaves the process).
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "comm/comm.h"
#include "test_support.h"

namespace moe::comm {
namespace {

using moe::test::throws_error_with;

TEST(SingleComm, IsRankZeroOfOne) {
    auto comm = make_single_process_comm();
    EXPECT_EQ(comm->rank(), 0);
    EXPECT_EQ(comm->size(), 1);
    EXPECT_STREQ(comm->describe(), "single process");
}

TEST(SingleComm, AlltoallvCopiesTheOwnBlockBetweenOffsets) {
    auto comm = make_single_process_comm();
    std::vector<char> send(16), recv(20, '.');
    std::iota(send.begin(), send.end(), 'a');
    const int64_t count = 5, send_off = 3, recv_off = 11;
    comm->alltoallv(send.data(), &count, &send_off, recv.data(), &count, &recv_off);
    EXPECT_EQ(std::string(recv.begin(), recv.end()), "...........defgh....");
}

TEST(SingleComm, AlltoallvInPlaceOverlapIsSafe) {
    // recv overlaps send shifted by 2 bytes: memmove semantics required.
    auto comm = make_single_process_comm();
    std::string buf = "0123456789";
    const int64_t count = 6, send_off = 0, recv_off = 2;
    comm->alltoallv(buf.data(), &count, &send_off, buf.data(), &count, &recv_off);
    EXPECT_EQ(buf, "0101234589");
}

TEST(SingleComm, AlltoallvZeroBytesAcceptsNullBuffers) {
    auto comm = make_single_process_comm();
    const int64_t zero = 0;
    comm->alltoallv(nullptr, &zero, &zero, nullptr, &zero, &zero);
    EXPECT_EQ(comm->counters().calls, 1);
}

TEST(SingleComm, AlltoallvRejectsMismatchedAndNegativeCounts) {
    auto comm = make_single_process_comm();
    std::vector<char> send(8), recv(8);
    const int64_t four = 4, three = 3, zero = 0, minus = -1;
    EXPECT_TRUE(throws_error_with(
        [&] { comm->alltoallv(send.data(), &four, &zero, recv.data(), &three, &zero); },
        {"alltoallv", "sends 4 bytes", "receive 3"}));
    EXPECT_TRUE(throws_error_with(
        [&] { comm->alltoallv(send.data(), &minus, &zero, recv.data(), &minus, &zero); },
        {"alltoallv", "negative"}));
}

TEST(SingleComm, AlltoallI64Copies) {
    auto comm = make_single_process_comm();
    const std::vector<int64_t> send = {7, -8, int64_t{1} << 40};
    std::vector<int64_t> recv(3, 0);
    comm->alltoall_i64(send.data(), recv.data(), 3);
    EXPECT_EQ(recv, send);
}

TEST(SingleComm, AllreduceLeavesDataUnchanged) {
    auto comm = make_single_process_comm();
    std::vector<float> f = {1.5f, -2.25f};
    std::vector<double> d = {1e300, -0.0};
    std::vector<int64_t> i = {3, -4};
    comm->allreduce_sum(f.data(), 2);
    comm->allreduce_sum(d.data(), 2);
    comm->allreduce_sum(i.data(), 2);
    EXPECT_EQ(f, (std::vector<float>{1.5f, -2.25f}));
    EXPECT_EQ(d, (std::vector<double>{1e300, -0.0}));
    EXPECT_EQ(i, (std::vector<int64_t>{3, -4}));
    comm->allreduce_max(i.data(), 2);
    EXPECT_EQ(i, (std::vector<int64_t>{3, -4}));
    EXPECT_TRUE(throws_error_with([&] { comm->allreduce_max(i.data(), -1); },
                                  {"allreduce_max", "negative"}));
}

TEST(SingleComm, BroadcastFromRootZeroKeepsData) {
    auto comm = make_single_process_comm();
    std::string data = "keep";
    comm->broadcast(data.data(), 4, 0);
    EXPECT_EQ(data, "keep");
}

TEST(SingleComm, BroadcastAndGatherFromAnotherRootFail) {
    auto comm = make_single_process_comm();
    char byte = 1;
    EXPECT_TRUE(throws_error_with([&] { comm->broadcast(&byte, 1, 1); },
                                  {"broadcast", "root 1", "rank 0 of 1"}));
    EXPECT_TRUE(
        throws_error_with([&] { comm->gather(&byte, 1, &byte, -1); }, {"gather", "root -1"}));
}

TEST(SingleComm, GatherCopiesToRecv) {
    auto comm = make_single_process_comm();
    const std::string send = "abc";
    std::string recv = "xyz?";
    comm->gather(send.data(), 3, recv.data(), 0);
    EXPECT_EQ(recv, "abc?");
}

TEST(SingleComm, CountersCountCallsButNoBytes) {
    auto comm = make_single_process_comm();
    std::vector<char> send(64, 1), recv(64);
    const int64_t count = 64, zero = 0;
    std::vector<float> f(10, 1.0f);
    comm->alltoallv(send.data(), &count, &zero, recv.data(), &count, &zero);
    comm->allreduce_sum(f.data(), 10);
    comm->broadcast(send.data(), 64, 0);
    comm->barrier();
    EXPECT_THROW(comm->broadcast(send.data(), 64, 3), moe::Error);  // a failed call counts
    EXPECT_EQ(comm->counters().calls, 5);
    EXPECT_EQ(comm->counters().bytes_sent, 0);
    EXPECT_GE(comm->counters().seconds, 0.0);
    comm->reset_counters();
    EXPECT_EQ(comm->counters().calls, 0);
    EXPECT_EQ(comm->counters().seconds, 0.0);
}

TEST(SingleComm, WorldIsSingleProcessWithoutMpirun) {
    // ctest does not start this executable through mpirun, so no MPI library call is made.
    ASSERT_FALSE(launched_by_mpirun());
    auto comm = make_world_comm();
    EXPECT_EQ(comm->size(), 1);
    EXPECT_STREQ(comm->describe(), "single process");
}

TEST(SingleComm, AbortExitsWithTheCode) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(make_single_process_comm()->abort(7), ::testing::ExitedWithCode(7), "");
}

}  // namespace
}  // namespace moe::comm
