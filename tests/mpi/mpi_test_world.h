// What the tests in tests/mpi/ share: the world group (set up by mpi_test_main.cpp before
// any test runs) and group-wide checks.
//
// Every rank runs every test, so a test must call the same collectives in the same order on
// every rank. Prefer EXPECT_* over ASSERT_* before a collective: an ASSERT that returns
// early on one rank leaves the others waiting; the harness then ends the job after
// MOE_MPI_TEST_TIMEOUT seconds (default 60) instead of letting it hang.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "comm/comm.h"

namespace moe::test {

// MPI_COMM_WORLD, made with comm::make_mpi_comm().
comm::Comm& world();

// True on every rank when `ok` is true on every rank.
inline bool all_ranks(bool ok) {
    int64_t bad = ok ? 0 : 1;
    world().allreduce_max(&bad, 1);
    return bad == 0;
}

// True on every rank when the `bytes` bytes at data are identical on every rank (compared
// on rank 0, which then broadcasts the verdict). data: [bytes]
inline bool same_on_all_ranks(const void* data, int64_t bytes) {
    comm::Comm& c = world();
    std::vector<char> all(c.rank() == 0 ? static_cast<size_t>(bytes) * c.size() : 0);
    c.gather(data, bytes, all.data(), 0);
    int64_t same = 1;
    if (c.rank() == 0)
        for (int r = 0; r < c.size(); ++r)
            if (std::memcmp(all.data() + static_cast<size_t>(r) * bytes, data, bytes) != 0)
                same = 0;
    c.broadcast(&same, sizeof same, 0);
    return same == 1;
}

}  // namespace moe::test
