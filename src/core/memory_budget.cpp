#include "core/memory_budget.h"

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "core/check.h"
#include "core/parse_number.h"

namespace moe {

namespace {

// First number on the line of `file` that starts with `key` (in kB for /proc/meminfo).
bool read_keyed_number(const char* file, const std::string& key, uint64_t* out) {
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) {
        if (line.compare(0, key.size(), key) != 0) continue;
        unsigned long long v = 0;
        if (std::sscanf(line.c_str() + key.size(), "%llu", &v) != 1) return false;
        *out = v;
        return true;
    }
    return false;
}

// A file holding one number ("max" for no limit, as cgroup v2 writes it).
bool read_number_file(const char* file, uint64_t* out) {
    std::ifstream in(file);
    std::string text;
    if (!(in >> text) || text == "max") return false;
    unsigned long long v = 0;
    if (std::sscanf(text.c_str(), "%llu", &v) != 1) return false;
    *out = v;
    return true;
}

uint64_t parse_limit(const char* text) {
    std::string s(text);
    uint64_t scale = 1;
    if (!s.empty()) {
        switch (s.back()) {
            case 'K':
            case 'k':
                scale = uint64_t(1) << 10;
                break;
            case 'M':
            case 'm':
                scale = uint64_t(1) << 20;
                break;
            case 'G':
            case 'g':
                scale = uint64_t(1) << 30;
                break;
            default:
                break;
        }
        if (scale != 1) s.pop_back();
    }
    return sat_mul(uint64_t(parse_int64(s, "MOE_MEMORY_LIMIT", 0)), scale);
}

}  // namespace

uint64_t available_memory_bytes() {
    uint64_t avail = UINT64_MAX, v = 0;
    if (read_keyed_number("/proc/meminfo", "MemAvailable:", &v)) avail = sat_mul(v, 1024);
    // cgroup v2, then v1: a container's limit is invisible in /proc/meminfo.
    uint64_t limit = 0, usage = 0;
    if ((read_number_file("/sys/fs/cgroup/memory.max", &limit) &&
         read_number_file("/sys/fs/cgroup/memory.current", &usage)) ||
        (read_number_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", &limit) &&
         read_number_file("/sys/fs/cgroup/memory/memory.usage_in_bytes", &usage)))
        avail = std::min(avail, limit > usage ? limit - usage : 0);
    struct rlimit rl {};
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        uint64_t mapped_pages = 0;
        std::ifstream statm("/proc/self/statm");
        statm >> mapped_pages;
        const uint64_t mapped = sat_mul(mapped_pages, 4096);
        avail = std::min(avail, rl.rlim_cur > mapped ? uint64_t(rl.rlim_cur) - mapped : 0);
    }
    if (const char* cap = std::getenv("MOE_MEMORY_LIMIT"); cap && *cap)
        avail = std::min(avail, parse_limit(cap));
    return avail;
}

std::string format_bytes(uint64_t bytes) {
    if (bytes == UINT64_MAX) return "more than 16 EiB";
    if (bytes < 1024) return std::to_string(bytes) + " bytes";
    const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = double(bytes) / 1024;
    int u = 0;
    while (v >= 1024 && u < 5) v /= 1024, ++u;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
    return buf;
}

void require_memory(uint64_t bytes, const std::string& what) {
    const uint64_t avail = available_memory_bytes();
    MOE_REQUIRE(bytes <= avail, what, " needs ", format_bytes(bytes), "; ", format_bytes(avail),
                " available");
}

}  // namespace moe
