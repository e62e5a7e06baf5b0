// MultitaskModel allocates nothing in forward or backward: its arenas are sized at
// construction for max_batch rows, so scoring one row right after construction, and
// training steps, make no operator new call. This executable replaces every global
// operator new with a counting one (as test_step_allocations.cpp, whose notes apply: only
// operator new is seen, and oneDNN's dnnl_sgemm, which makes a small allocation of its own
// in some calls, is interposed so that its allocations are counted apart).
#include <gtest/gtest.h>

#include "counting_allocator.h"  // this executable's operator new and dnnl_sgemm

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "tabular/multitask_model.h"

namespace moe {
namespace {

using test::CountAllocations;

using tabular::MultitaskInputs;
using tabular::MultitaskModel;
using tabular::MultitaskModelConfig;

MultitaskInputs inputs() {
    MultitaskInputs in;
    in.table_rows = {50, 7};
    in.embed_dims = {8, 4};
    in.n_numeric = 3;
    in.task_kinds = {tabular::TargetKind::binary, tabular::TargetKind::regression};
    in.task_weights = {1.0, 1.0};
    in.task_names = {"a", "b"};
    return in;
}

TEST(MultitaskAllocations, TheCounterSeesAllocations) {
    const CountAllocations counting;
    auto* v = new std::vector<int>(3);
    delete v;
    EXPECT_EQ(counting.count(), 2);  // the vector and its elements
}

TEST(MultitaskAllocations, ForwardAndBackwardAllocateNothing) {
    const int64_t max_batch = 256;
    std::vector<int32_t> cats(size_t(max_batch * 2));
    std::vector<float> nums(size_t(max_batch * 3), 0.5f), targets(size_t(max_batch * 2), 1.0f);
    for (size_t i = 0; i < cats.size(); ++i) cats[i] = int32_t(i % 7);
    for (const char* arch : {"shared_bottom", "omoe", "mmoe", "ple"}) {
        for (int64_t top_k : {0, 2}) {
            SCOPED_TRACE(std::string(arch) + " gate_top_k=" + std::to_string(top_k));
            MultitaskModelConfig c;
            c.arch = arch;
            c.gate_top_k = top_k;
            c.ple_levels = 3;
            MultitaskModel m(c, inputs(), max_batch);
            m.init_weights(1);
            {  // one row, scored straight after construction
                const CountAllocations counting;
                m.forward(cats.data(), nums.data(), nullptr, 1);
                EXPECT_EQ(counting.count(), 0)
                    << "B=1 scoring, and " << counting.sgemm_count() << " in "
                    << counting.sgemm_calls() << " dnnl_sgemm calls";
            }
            const CountAllocations counting;
            for (int64_t B : {int64_t(1), max_batch, int64_t(37)}) {
                m.grads().zero();
                m.forward(cats.data(), nums.data(), targets.data(), B);
                m.backward();
            }
            EXPECT_EQ(counting.count(), 0)
                << "training steps, and " << counting.sgemm_count() << " in "
                << counting.sgemm_calls() << " dnnl_sgemm calls";
            // The interposed gemm is the one called (one row takes a path without it).
            EXPECT_GT(counting.sgemm_calls(), 0);
        }
    }
}

}  // namespace
}  // namespace moe
