// MultitaskModel allocates nothing in forward or backward: its arenas are sized at
// construction for max_batch rows, so scoring one row right after construction, and
// training steps, make no operator new call. This executable replaces every global
// operator new with a counting one (as test_step_allocations.cpp, whose notes apply: only
// operator new is seen, and oneDNN's dnnl_sgemm, which makes a small allocation of its own
// in some calls, is interposed so that its allocations are counted apart).
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_version.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "tabular/multitask_model.h"

namespace {

// Allocations made while counting is on, by any thread (OpenMP workers included).
std::atomic<bool> g_counting{false};
std::atomic<int64_t> g_allocations{0};
// While a dnnl_sgemm call runs (the model's calls are sequential), allocations go here.
std::atomic<bool> g_in_sgemm{false};
std::atomic<int64_t> g_sgemm_allocations{0}, g_sgemm_calls{0};

void* counted_alloc(std::size_t size, std::size_t align) {
    if (g_counting.load(std::memory_order_relaxed))
        (g_in_sgemm.load(std::memory_order_relaxed) ? g_sgemm_allocations : g_allocations)
            .fetch_add(1, std::memory_order_relaxed);
    if (size == 0) size = 1;  // operator new(0) must return a unique pointer
    if (align <= alignof(std::max_align_t)) return std::malloc(size);
    // aligned_alloc wants a size that is a multiple of the alignment.
    return std::aligned_alloc(align, (size + align - 1) / align * align);
}

void* counted_new(std::size_t size, std::size_t align) {
    void* p = counted_alloc(size, align);
    if (!p) throw std::bad_alloc();
    return p;
}

}  // namespace

// Every replaceable global allocation function, so that no path escapes the count; the
// deletes free what malloc / aligned_alloc returned.
void* operator new(std::size_t n) {
    return counted_new(n, 0);
}
void* operator new[](std::size_t n) {
    return counted_new(n, 0);
}
void* operator new(std::size_t n, std::align_val_t a) {
    return counted_new(n, std::size_t(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
    return counted_new(n, std::size_t(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    return counted_alloc(n, 0);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    return counted_alloc(n, 0);
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return counted_alloc(n, std::size_t(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return counted_alloc(n, std::size_t(a));
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    std::free(p);
}

using SgemmFn = dnnl_status_t (*)(char, char, dnnl_dim_t, dnnl_dim_t, dnnl_dim_t, float,
                                  const float*, dnnl_dim_t, const float*, dnnl_dim_t, float, float*,
                                  dnnl_dim_t);
// The shared library's dnnl_sgemm, looked up before main (dlopen and dlsym allocate).
SgemmFn find_real_sgemm() {
    void* lib =
        dlopen(("libdnnl.so." + std::to_string(DNNL_VERSION_MAJOR)).c_str(), RTLD_NOW | RTLD_LOCAL);
    return lib ? reinterpret_cast<SgemmFn>(dlsym(lib, "dnnl_sgemm")) : nullptr;
}
const SgemmFn g_real_sgemm = find_real_sgemm();

// kernels::gemm calls this one (the executable's definition interposes the library's).
extern "C" dnnl_status_t dnnl_sgemm(char ta, char tb, dnnl_dim_t M, dnnl_dim_t N, dnnl_dim_t K,
                                    float alpha, const float* A, dnnl_dim_t lda, const float* B,
                                    dnnl_dim_t ldb, float beta, float* C, dnnl_dim_t ldc) {
    if (!g_real_sgemm) std::abort();  // libdnnl.so.N not found: nothing sensible to do
    g_sgemm_calls.fetch_add(1, std::memory_order_relaxed);
    g_in_sgemm.store(true);
    const dnnl_status_t st = g_real_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    g_in_sgemm.store(false);
    return st;
}

namespace moe {
namespace {

using tabular::MultitaskInputs;
using tabular::MultitaskModel;
using tabular::MultitaskModelConfig;

class CountAllocations {
  public:
    CountAllocations() {
        g_allocations.store(0);
        g_sgemm_allocations.store(0);
        g_sgemm_calls.store(0);
        g_counting.store(true);
    }
    ~CountAllocations() { g_counting.store(false); }
    int64_t count() const { return g_allocations.load(); }  // outside dnnl_sgemm
    int64_t sgemm_count() const { return g_sgemm_allocations.load(); }
    int64_t sgemm_calls() const { return g_sgemm_calls.load(); }
};

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
