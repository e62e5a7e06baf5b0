// Default options of the sanitizer runtimes, compiled into every executable of a
// MOE_SANITIZE build (see the top-level CMakeLists.txt).
//
// Compiled in rather than exported as ASAN_OPTIONS by the Makefile, because the programs
// under test are started by many hands: ctest, the test executables themselves (`moe` via
// std::system), Python scripts, mpirun, and a `moe` run by hand from build-asan. Every one
// of them gets the same options and the same leak suppressions this way, whatever
// environment it inherits. The runtimes read these first and the environment variables
// after, so ASAN_OPTIONS=... still adds to or overrides any of them (tests/CMakeLists.txt
// does for MPI jobs).
//
// exitcode=86: a sanitizer report must never pass for an expected failure. Several tests
// expect the `moe` command to exit 1 (bad input) or 2 (usage); a report with the default
// exit code 1 would satisfy them.

#ifndef MOE_SANITIZER_SUPPRESSIONS
#error "MOE_SANITIZER_SUPPRESSIONS (the directory of lsan.supp) must be defined by CMake"
#endif

// The runtimes call these before main() and before their own initialisation is complete, so
// they must not be instrumented themselves.
#define MOE_SANITIZER_HOOK \
    extern "C" __attribute__((visibility("default"), used, no_sanitize("address", "undefined")))

MOE_SANITIZER_HOOK const char* __asan_default_options() {
    // check_initialization_order / strict_init_order: static initialisers that read another
    // translation unit's globals before that unit is initialised.
    // Not detect_stack_use_after_return: its "fake stack" frames are only 32-byte aligned,
    // while GCC 12 with -march=native (AVX-512) keeps 64-byte aligned arrays on the stack
    // and reads them with aligned vmovdqa64, which then faults (seen in
    // test_router_assigned: a SEGV in std::copy from a local `const double w[8]`).
    return "exitcode=86:check_initialization_order=1:strict_init_order=1:"
           "strict_string_checks=1";
}

MOE_SANITIZER_HOOK const char* __lsan_default_options() {
    return "exitcode=86:suppressions=" MOE_SANITIZER_SUPPRESSIONS "/lsan.supp:print_suppressions=0";
}

MOE_SANITIZER_HOOK const char* __ubsan_default_options() {
    // halt_on_error: with -fno-sanitize-recover=undefined the first report ends the process
    // anyway; this makes the exit code ours (86) rather than the runtime's default.
    return "exitcode=86:halt_on_error=1:print_stacktrace=1";
}
