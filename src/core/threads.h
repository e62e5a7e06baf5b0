// Threading policy: OpenMP everywhere, one knob.
//
// set_num_threads(n) fixes the thread count for our loops and for oneDNN (which uses the
// same OpenMP runtime in Debian's build). n == 0 means all cores. More threads than cores
// only slow a CPU-bound job down (and a count like 10^11 makes libgomp abort while it
// allocates their stacks), so n above the cores present is clamped to them with a warning
// on stderr; a negative n is an error. Results are reproducible for a fixed thread count:
// no loop depends on scheduling order.
#pragma once

#include <cstdint>

namespace moe {

// Returns the count in force.
int set_num_threads(int64_t n);
int num_threads();
int hardware_threads();

}  // namespace moe
