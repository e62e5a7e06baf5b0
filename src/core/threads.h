// Threading policy: OpenMP everywhere, one knob.
//
// set_num_threads(n) fixes the thread count for our loops and for oneDNN (which uses the
// same OpenMP runtime in Debian's build). n <= 0 means all cores. Results are
// reproducible for a fixed thread count: no loop depends on scheduling order.
#pragma once

namespace moe {

void set_num_threads(int n);
int num_threads();
int hardware_threads();

}  // namespace moe
