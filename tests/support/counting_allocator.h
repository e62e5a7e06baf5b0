// Counting allocator for the tests that prove a path allocates nothing: include this header
// in exactly ONE source file of a test executable (it defines the replaceable global
// operator new and delete, and an interposed dnnl_sgemm, for the whole executable).
//
// Only operator new is counted: memory taken with malloc directly (the arenas') is not seen.
// One known exception is counted apart: oneDNN 2.6's dnnl_sgemm makes a 192-byte operator
// new inside the library in some of its calls, which no caller can avoid short of leaving
// dnnl_sgemm. The executable's own dnnl_sgemm (defined here, it wins over the shared
// library's) forwards to the library's and counts those allocations apart, so that tests
// can require ours to be zero. The linker drops libdnnl from such an executable when its one
// symbol is defined here, so the library is opened by its soname.
#pragma once

#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_version.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>

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
// The shared library's dnnl_sgemm, looked up before main (dlopen and dlsym allocate). The
// linker drops libdnnl from this executable (its one symbol is defined here), so it is
// opened by its soname.
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

namespace moe::test {

// Counts operator new calls in its lifetime, by any thread (OpenMP workers included).
class CountAllocations {
  public:
    CountAllocations() {
        g_allocations.store(0);
        g_sgemm_allocations.store(0);
        g_sgemm_calls.store(0);
        g_counting.store(true);
    }
    ~CountAllocations() { g_counting.store(false); }
    int64_t count() const { return g_allocations.load(); }  // ours: outside dnnl_sgemm
    int64_t sgemm_count() const { return g_sgemm_allocations.load(); }
    int64_t sgemm_calls() const { return g_sgemm_calls.load(); }
};

}  // namespace moe::test
