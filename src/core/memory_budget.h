// How much memory a job may use, checked before large allocations.
//
// Linux hands out address space freely (overcommit): a 400 GiB malloc can succeed and the
// process is killed later, when the pages are touched, with no message. So any size that
// comes from a user (a config, a flag, checkpoint metadata) is turned into bytes with
// overflow-safe arithmetic and compared with what the machine has before anything is
// allocated; the error says how much was needed and how much there is:
//   "model needs 412.3 GiB of parameters and activations; 22.1 GiB available"
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

namespace moe {

// Bytes this process may still allocate: the smallest of /proc/meminfo's MemAvailable, a
// cgroup (v2 or v1) memory limit minus its usage, and RLIMIT_AS minus what is mapped.
// MOE_MEMORY_LIMIT (bytes, e.g. "2000000000" or "2G") caps it further, for tests and for
// sharing a machine.
uint64_t available_memory_bytes();

// Throws moe::Error "WHAT needs X GiB; Y GiB available" when `bytes` exceeds the available
// memory. `what` names the consumer, e.g. "model (parameters, gradients, AdamW moments and
// activations for batch 16)".
void require_memory(uint64_t bytes, const std::string& what);

// "412.3 GiB", "3.0 MiB", "17 bytes"; "more than 16 EiB" for a saturated count.
std::string format_bytes(uint64_t bytes);

// Saturating arithmetic for byte counts: an overflow gives UINT64_MAX, which is more than
// any machine has, so one comparison catches both a huge and an overflowing request.
inline uint64_t sat_add(uint64_t a, uint64_t b) {
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}
inline uint64_t sat_mul(uint64_t a, uint64_t b) {
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}
// A product of sizes; a negative size counts as 0 (validation reports those).
inline uint64_t sat_product(std::initializer_list<int64_t> sizes) {
    uint64_t r = 1;
    for (int64_t s : sizes) r = sat_mul(r, s > 0 ? uint64_t(s) : 0);
    return r;
}

}  // namespace moe
