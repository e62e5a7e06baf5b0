#include "core/threads.h"

#include <omp.h>

#include <cstdio>
#include <thread>

#include "core/check.h"

namespace moe {

int hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n ? int(n) : 1;
}

int set_num_threads(int64_t n) {
    MOE_REQUIRE(n >= 0, "thread count must be >= 0 (0 = all cores), got ", n);
    const int cores = hardware_threads();
    if (n > cores) {
        std::fprintf(stderr,
                     "warning: %lld threads asked for, this machine has %d cores; using %d\n",
                     static_cast<long long>(n), cores, cores);
        n = cores;
    }
    const int threads = n > 0 ? int(n) : cores;
    omp_set_num_threads(threads);
    return threads;
}

int num_threads() {
    return omp_get_max_threads();
}

}  // namespace moe
