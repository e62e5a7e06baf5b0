// Ctrl-C (SIGINT) and SIGTERM without signal handlers on compute threads.
//
// Why a watcher thread instead of sigaction: a handler runs on whichever thread the kernel
// picks, in the middle of whatever it was doing. oneDNN's multi-threaded sgemm does not
// survive that: a test program calling dnnl_sgemm on 2 OpenMP threads while receiving
// ~10k SIGUSR1/s (handler only increments an atomic) hung, segfaulted or aborted with
// "corrupted size vs. prev_size" in every one of 3 runs; with the signal blocked everywhere
// and taken by sigwait() on its own thread, 3 of 3 runs finished with correct results. A
// single Ctrl-C during training hit the same heap corruption about once in 30 tries.
//
// So the signals are blocked in the thread that calls install_stop_signal_watcher() (the
// main thread, before any other thread exists, so that every thread created later, OpenMP
// and oneDNN workers included, inherits the mask), and one watcher thread waits for them:
//   - while a StopScope is alive (a training run), the first signal only sets a flag that
//     the loop polls between steps; another one more than 1 s later ends the process at
//     once (one within 1 s is taken as the same request: `timeout` signals both the
//     process and its group, so a single stop can arrive twice);
//   - otherwise the signal takes its default action (the process ends, as it would have).
#pragma once

namespace moe {

// Blocks SIGINT and SIGTERM in the calling thread and starts the watcher. Call it first in
// main(), before anything starts a thread; calling it again does nothing. A program that
// never calls it keeps the default behaviour (Ctrl-C ends it, no graceful stop).
void install_stop_signal_watcher();

// True once install_stop_signal_watcher() has run in this process.
bool stop_signal_watcher_installed();

// While alive, SIGINT/SIGTERM request a stop instead of ending the process.
class StopScope {
  public:
    StopScope();
    ~StopScope();
    StopScope(const StopScope&) = delete;
    StopScope& operator=(const StopScope&) = delete;

    // True after a signal arrived during this scope.
    bool requested() const;
};

}  // namespace moe
