// Token embedding: a lookup into a [V, C] table (conventions: see linear.h).
#pragma once

#include <cstdint>

namespace moe::nn {

// out[N, C] = table[ids[n], :]. Every id must be in [0, V); an id outside is an error
// that names the position and the id.
template <class R>
void embedding_forward(R* out, const int32_t* ids, const R* table, int64_t N, int64_t V,
                       int64_t C);

// d_table[ids[n], :] += d_out[n, :].
template <class R>
void embedding_backward(R* d_table, const R* d_out, const int32_t* ids, int64_t N, int64_t V,
                        int64_t C);

}  // namespace moe::nn
