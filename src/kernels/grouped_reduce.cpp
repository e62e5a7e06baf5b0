#include "kernels/grouped_reduce.h"

namespace moe::kernels {

namespace {
thread_local int64_t t_groups = 1;
}

int64_t reduction_groups() {
    return t_groups;
}

ReductionGroups::ReductionGroups(int64_t g) : saved_(t_groups) {
    MOE_REQUIRE(g >= 1 && (g & (g - 1)) == 0, "reduction groups must be a power of two, got ", g);
    t_groups = g;
}

ReductionGroups::~ReductionGroups() {
    t_groups = saved_;
}

}  // namespace moe::kernels
