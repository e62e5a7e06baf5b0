// The Ctrl-C watcher: signals never run code on compute threads, a StopScope turns the first
// one into a request, anything else ends the process as it would have without the watcher.
// Each case runs in a fresh child process (gtest death tests, "threadsafe" style re-executes
// the binary), so the watcher is installed before that process starts any thread.
#include <gtest/gtest.h>
#include <omp.h>
#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "core/stop_signals.h"
#include "kernels/gemm.h"

namespace moe {
namespace {

class StopSignals : public ::testing::Test {
  protected:
    void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// Waits up to 10 s for `done`; the watcher thread needs a moment to take the signal.
template <class F>
bool wait_for(F done) {
    for (int i = 0; i < 1000 && !done(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return done();
}

bool sigint_blocked_here() {
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, nullptr, &cur);
    return sigismember(&cur, SIGINT) == 1;
}

TEST_F(StopSignals, WithoutAScopeASignalEndsTheProcess) {
    EXPECT_EXIT(
        {
            install_stop_signal_watcher();
            kill(getpid(), SIGINT);
            std::this_thread::sleep_for(std::chrono::seconds(10));
            std::exit(0);
        },
        ::testing::KilledBySignal(SIGINT), "");
}

TEST_F(StopSignals, WithoutTheWatcherAScopeChangesNothing) {
    EXPECT_EXIT(
        {
            StopScope scope;
            kill(getpid(), SIGTERM);
            std::this_thread::sleep_for(std::chrono::seconds(10));
            std::exit(0);
        },
        ::testing::KilledBySignal(SIGTERM), "");
}

TEST_F(StopSignals, InAScopeTheFirstSignalIsARequest) {
    EXPECT_EXIT(
        {
            install_stop_signal_watcher();
            StopScope scope;
            if (scope.requested()) std::exit(5);
            kill(getpid(), SIGTERM);
            std::exit(wait_for([&] { return scope.requested(); }) ? 3 : 4);
        },
        ::testing::ExitedWithCode(3), "stopping after this step");
}

TEST_F(StopSignals, InAScopeARepeatWithinASecondIsTheSameRequestALaterOneEndsTheProcess) {
    EXPECT_EXIT(
        {
            install_stop_signal_watcher();
            StopScope scope;
            kill(getpid(), SIGINT);
            if (!wait_for([&] { return scope.requested(); })) std::exit(4);
            kill(getpid(), SIGINT);  // within 1 s: the same request
            std::this_thread::sleep_for(std::chrono::milliseconds(1300));
            std::fprintf(stderr, "survived the repeat\n");
            kill(getpid(), SIGINT);  // later: ends the process
            std::this_thread::sleep_for(std::chrono::seconds(10));
            std::exit(0);
        },
        ::testing::KilledBySignal(SIGINT), "survived the repeat");
}

TEST_F(StopSignals, ANewScopeStartsWithoutARequest) {
    EXPECT_EXIT(
        {
            install_stop_signal_watcher();
            {
                StopScope first;
                kill(getpid(), SIGINT);
                if (!wait_for([&] { return first.requested(); })) std::exit(4);
            }
            StopScope second;
            std::exit(second.requested() ? 5 : 3);
        },
        ::testing::ExitedWithCode(3), "");
}

// The property the watcher exists for: OpenMP workers (and so oneDNN's) are created with
// the signals blocked, and a signal during multi-threaded gemms leaves the results right.
[[noreturn]] void gemm_under_a_signal() {
    install_stop_signal_watcher();
    StopScope scope;
    int unblocked = 0;
#pragma omp parallel num_threads(2) reduction(+ : unblocked)
    unblocked += sigint_blocked_here() ? 0 : 1;
    if (unblocked != 0) std::exit(6);
    const int64_t n = 96;
    std::vector<float> a(n * n, 1.0f), b(n * n, 1.0f), c(n * n);
    bool right = true;
    for (int it = 0; it < 400 && right; ++it) {
        if (it == 200) kill(getpid(), SIGINT);
        kernels::gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
        for (float x : c) right = right && x == float(n);
    }
    if (!right) std::exit(7);
    std::exit(wait_for([&] { return scope.requested(); }) ? 3 : 4);
}

TEST_F(StopSignals, ComputeThreadsInheritTheBlockedMaskAndGemmStaysRight) {
    EXPECT_EXIT(gemm_under_a_signal(), ::testing::ExitedWithCode(3), "");
}

}  // namespace
}  // namespace moe
