// Memory checks before allocation (core/memory_budget.h): saturating byte arithmetic, the
// available figure and its MOE_MEMORY_LIMIT cap, and errors that give both figures.
#include "core/memory_budget.h"

#include <cstdlib>

#include "test_support.h"

namespace moe {
namespace {

TEST(MemoryBudget, SaturatingArithmetic) {
    EXPECT_EQ(sat_add(1, 2), 3u);
    EXPECT_EQ(sat_add(UINT64_MAX - 1, 2), UINT64_MAX);
    EXPECT_EQ(sat_mul(uint64_t(1) << 32, uint64_t(1) << 32), UINT64_MAX);
    EXPECT_EQ(sat_product({1000000000, 1000000000, 1000000000}), UINT64_MAX);
    EXPECT_EQ(sat_product({2, 3, 4}), 24u);
    EXPECT_EQ(sat_product({5, -1}), 0u);  // a negative size counts as none
}

TEST(MemoryBudget, FormatBytes) {
    EXPECT_EQ(format_bytes(17), "17 bytes");
    EXPECT_EQ(format_bytes(3 << 20), "3.0 MiB");
    EXPECT_EQ(format_bytes(uint64_t(412) << 30), "412.0 GiB");
    EXPECT_EQ(format_bytes(UINT64_MAX), "more than 16 EiB");
}

TEST(MemoryBudget, AvailableIsPositiveAndTheCapApplies) {
    const uint64_t avail = available_memory_bytes();
    EXPECT_GT(avail, uint64_t(1) << 20);
    ::setenv("MOE_MEMORY_LIMIT", "64M", 1);
    EXPECT_EQ(available_memory_bytes(), std::min<uint64_t>(avail, uint64_t(64) << 20));
    EXPECT_NO_THROW(require_memory(uint64_t(1) << 20, "small"));
    EXPECT_TRUE(test::throws_error_with([] { require_memory(uint64_t(100) << 20, "model (x)"); },
                                        {"model (x) needs 100.0 MiB", "64.0 MiB available"}));
    ::setenv("MOE_MEMORY_LIMIT", "lots", 1);
    EXPECT_TRUE(test::throws_error_with([] { available_memory_bytes(); }, {"MOE_MEMORY_LIMIT"}));
    ::unsetenv("MOE_MEMORY_LIMIT");
    EXPECT_TRUE(test::throws_error_with([] { require_memory(UINT64_MAX, "model"); },
                                        {"needs more than 16 EiB"}));
}

}  // namespace
}  // namespace moe
