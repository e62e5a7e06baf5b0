// parallel_for: the one way code above the kernels (src/nn, src/moe, src/train) spreads a loop
// over the threads. A backend for other hardware replaces the kernels of src/kernels/<backend>
// and this file, not the layers' call sites.
//
// Today it is OpenMP underneath, with the schedules the layers were tuned with: contiguous
// static chunks (one per thread, the same split on every call, so a result never depends on
// timing) or dynamic single items (experts whose row counts differ by 10x after routing).
// `parallel` is the caller's size threshold: below it the loop runs on the calling thread,
// because a fork/join of the team costs ~2-5 us on 2 cores, more than a small loop's work.
// Iterations must be independent; body(i) must not throw (an exception cannot leave an
// OpenMP region: report errors after the loop).
#pragma once

#include <omp.h>

#include <cstdint>

namespace moe {

// body(i) for i in [0, n), static contiguous chunks.
template <class Body>
inline void parallel_for(int64_t n, bool parallel, Body&& body) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t i = 0; i < n; ++i) body(i);
}

// body(i) for i in [0, n), handed out one at a time to whichever thread is free: for a few
// items of very different cost (experts).
template <class Body>
inline void parallel_for_dynamic(int64_t n, bool parallel, Body&& body) {
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
    for (int64_t i = 0; i < n; ++i) body(i);
}

// A team region, for loops that need the thread's index (a scratch slot per thread) or one
// fork/join around many small loops: body(thread, threads) runs once on each of up to
// max_threads threads (0: all), or once on the caller as (0, 1) when !parallel.
template <class Body>
inline void parallel_team(bool parallel, int64_t max_threads, Body&& body) {
    const int team = max_threads > 0 ? int(max_threads) : omp_get_max_threads();
#pragma omp parallel if (parallel) num_threads(team)
    body(int64_t(omp_get_thread_num()), int64_t(omp_get_num_threads()));
}

// Inside parallel_team's body, on every thread of the team: body(i) for i in [0, n), split in
// static contiguous chunks over the team, with no barrier at the end (the team's threads go
// on to their next statement; the region's end waits for all).
template <class Body>
inline void team_for_nowait(int64_t n, Body&& body) {
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; ++i) body(i);
}

// Whether the caller already runs inside a parallel_for (a nested one would run serially
// anyway; callers use this to pick a different split).
inline bool in_parallel_region() {
    return omp_in_parallel() != 0;
}

}  // namespace moe
