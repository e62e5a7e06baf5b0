#include "core/stop_signals.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "core/check.h"

namespace moe {

namespace {

std::atomic<bool> g_installed{false};
std::atomic<int> g_scopes{0};  // live StopScopes
std::atomic<bool> g_requested{false};

sigset_t watched_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return set;
}

// Gives `sig` its default action on this (the watcher) thread, the only one that does not
// block it, so the process ends exactly as if no watcher had existed.
[[noreturn]] void die_by(int sig) {
    std::signal(sig, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
    raise(sig);
    _exit(128 + sig);  // not reached: SIGINT and SIGTERM terminate by default
}

void watch() {
    const sigset_t set = watched_signals();
    std::chrono::steady_clock::time_point first_at;
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) continue;
        if (g_scopes.load() == 0) die_by(sig);
        // A repeat within 1 s is the same request: `timeout` and similar tools signal both
        // the process and its process group, so one stop arrives twice, microseconds
        // apart. A person pressing Ctrl-C again is much slower than that.
        const auto now = std::chrono::steady_clock::now();
        if (g_requested.load()) {
            if (now - first_at > std::chrono::seconds(1)) die_by(sig);
            continue;
        }
        first_at = now;
        g_requested.store(true);
        // Names the signal: under mpirun a SIGTERM usually means the job is being ended
        // (e.g. another rank died), not that someone pressed Ctrl-C.
        const char* msg = sig == SIGINT
                              ? "\nCtrl-C: stopping after this step and saving a checkpoint "
                                "(press Ctrl-C again to quit without saving)\n"
                              : "\nSIGTERM: stopping after this step and saving a checkpoint "
                                "(a second SIGTERM quits without saving)\n";
        // write(2), not stdio: the main thread may hold stdout's lock.
        [[maybe_unused]] const ssize_t n = write(STDERR_FILENO, msg, std::strlen(msg));
    }
}

}  // namespace

void install_stop_signal_watcher() {
    static std::once_flag once;
    std::call_once(once, [] {
        const sigset_t set = watched_signals();
        const int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr);
        MOE_CHECK(rc == 0,
                  "install_stop_signal_watcher: pthread_sigmask failed: ", std::strerror(rc));
        std::thread(watch).detach();
        g_installed.store(true);
    });
}

bool stop_signal_watcher_installed() {
    return g_installed.load();
}

StopScope::StopScope() {
    if (g_scopes.fetch_add(1) == 0) g_requested.store(false);
}

StopScope::~StopScope() {
    g_scopes.fetch_sub(1);
}

bool StopScope::requested() const {
    return g_requested.load();
}

}  // namespace moe
