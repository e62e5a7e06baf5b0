// A minimal MPI job for checking that ranks can talk across hosts: every rank reports its host
// and network address, then all ranks sum 1 MiB of floats with MPI_Allreduce and check the
// result element by element. Run by scripts/two_host_mpirun.sh (test mpi.two_host_smoke), where
// the 1 MiB must cross the veth between two network namespaces.
//
//   two_host_probe [--distinct-hosts]
//
// --distinct-hosts also fails unless every rank sees a different non-loopback IPv4 address,
// i.e. the launcher really placed the ranks on different hosts rather than all on one.
// Exit status: 0 when every check passes on every rank, 1 otherwise (the same on all ranks).
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <mpi.h>
#include <netinet/in.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

// 262144 floats = 1 MiB: large enough that OpenMPI's TCP transport sends it as a long
// (rendezvous) message in several fragments, small enough to take milliseconds.
constexpr int kCount = 1 << 18;

// Fixed-size record so that all ranks can exchange it with one MPI_Allgather.
struct HostInfo {
    char iface[32];  // e.g. "moe-vA"
    char addr[32];   // e.g. "10.77.0.1"; empty when the host has no non-loopback IPv4
};

HostInfo first_ipv4() {
    HostInfo info{};
    ifaddrs* list = nullptr;
    if (getifaddrs(&list) != 0) return info;
    for (const ifaddrs* p = list; p != nullptr; p = p->ifa_next) {
        if (p->ifa_addr == nullptr || p->ifa_addr->sa_family != AF_INET) continue;
        const auto* sin = reinterpret_cast<const sockaddr_in*>(p->ifa_addr);
        if (ntohl(sin->sin_addr.s_addr) >> 24 == 127) continue;  // loopback, 127.0.0.0/8
        std::snprintf(info.iface, sizeof info.iface, "%s", p->ifa_name);
        inet_ntop(AF_INET, &sin->sin_addr, info.addr, sizeof info.addr);
        break;
    }
    freeifaddrs(list);
    return info;
}

// Rank r contributes (r + 1) * (i % 8 + 1) at index i, so the sum over `size` ranks is
// size * (size + 1) / 2 * (i % 8 + 1): small integers, exact in float whatever the order of
// summation, and a value that differs by index, so a misplaced fragment is caught too.
float contribution(int rank, int i) {
    return float(rank + 1) * float(i % 8 + 1);
}
float expected_sum(int size, int i) {
    return float(size * (size + 1) / 2) * float(i % 8 + 1);
}

}  // namespace

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    bool distinct_hosts = false;
    for (int a = 1; a < argc; ++a) {
        if (std::strcmp(argv[a], "--distinct-hosts") == 0) distinct_hosts = true;
    }

    char host[MPI_MAX_PROCESSOR_NAME] = {};
    int host_len = 0;
    MPI_Get_processor_name(host, &host_len);
    HostInfo mine = first_ipv4();
    std::vector<HostInfo> all(size);  // all: [size]
    MPI_Allgather(&mine, sizeof(HostInfo), MPI_BYTE, all.data(), sizeof(HostInfo), MPI_BYTE,
                  MPI_COMM_WORLD);

    int failed = 0;
    if (distinct_hosts) {
        for (int r = 0; r < size; ++r) {
            for (int q = r + 1; q < size; ++q) {
                if (all[r].addr[0] == '\0' || std::strcmp(all[r].addr, all[q].addr) == 0) {
                    if (rank == 0) {
                        std::fprintf(stderr,
                                     "two_host_probe: ranks %d and %d are not on distinct hosts "
                                     "(addresses '%s' and '%s')\n",
                                     r, q, all[r].addr, all[q].addr);
                    }
                    failed = 1;
                }
            }
        }
    }

    std::vector<float> data(kCount);  // data: [kCount]
    for (int i = 0; i < kCount; ++i) data[i] = contribution(rank, i);
    MPI_Allreduce(MPI_IN_PLACE, data.data(), kCount, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    int wrong = 0;
    for (int i = 0; i < kCount; ++i) {
        if (data[i] != expected_sum(size, i)) {
            if (wrong == 0) {
                std::fprintf(stderr, "two_host_probe: rank %d: allreduce[%d] = %g, expected %g\n",
                             rank, i, double(data[i]), double(expected_sum(size, i)));
            }
            ++wrong;
        }
    }
    if (wrong > 0) failed = 1;

    std::printf("two_host_probe: rank %d/%d on %s (%s %s): allreduce of %d floats (%d KiB) %s\n",
                rank, size, host, mine.iface[0] ? mine.iface : "-",
                mine.addr[0] ? mine.addr : "no IPv4", kCount, int(kCount * sizeof(float) / 1024),
                wrong == 0 ? "ok" : "WRONG");
    std::fflush(stdout);

    // Every rank exits with the same status, whichever rank found the problem.
    int any_failed = 0;
    MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any_failed;
}
