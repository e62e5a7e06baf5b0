#include "core/threads.h"

#include <omp.h>

#include <thread>

namespace moe {

int hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n ? int(n) : 1;
}

void set_num_threads(int n) { omp_set_num_threads(n > 0 ? n : hardware_threads()); }

int num_threads() { return omp_get_max_threads(); }

}  // namespace moe
