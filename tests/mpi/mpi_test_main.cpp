// main() for the GoogleTest programs in tests/mpi/, run as `mpirun -np N <exe>`.
//
// Every rank runs every test. Rank 0 prints GoogleTest's usual output; the other ranks print
// only their failures, each line prefixed with "[rank r]", so a run on 4 ranks reads like a
// run on one. After each test the ranks compare notes (rank 0 names the ranks a test failed
// on), and at the end they add up their failures, so every rank returns the same exit code
// and mpirun, and with it ctest, fails when any rank failed.
//
// A test that fails on one rank before a collective leaves the others waiting in it
// forever. A watchdog thread ends the process when one test runs longer than
// MOE_MPI_TEST_TIMEOUT seconds (default 60; the tests here take milliseconds); mpirun then
// ends the other ranks too, so the job fails instead of hanging until ctest's timeout.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "mpi_test_world.h"

namespace moe::test {

namespace {
std::unique_ptr<comm::Comm> g_world;
}

comm::Comm& world() {
    return *g_world;
}

}  // namespace moe::test

namespace {

using moe::test::world;

// Ends the process when a test stays armed longer than the limit. It never calls MPI (the
// thread level is "funneled": only the main thread may); exiting without MPI_Finalize is
// enough for mpirun to end the rest of the job.
class Watchdog {
  public:
    Watchdog(int rank, double seconds) : rank_(rank), limit_(seconds) {
        thread_ = std::thread([this] { run(); });
    }
    ~Watchdog() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    void arm(std::string what) {
        std::lock_guard<std::mutex> lock(mu_);
        what_ = std::move(what);
        deadline_ = std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(limit_));
        armed_ = true;
        cv_.notify_all();
    }
    void disarm() {
        std::lock_guard<std::mutex> lock(mu_);
        armed_ = false;
    }

  private:
    void run() {
        std::unique_lock<std::mutex> lock(mu_);
        while (!stop_) {
            if (!armed_) {
                cv_.wait(lock);
            } else if (cv_.wait_until(lock, deadline_) == std::cv_status::timeout && armed_ &&
                       std::chrono::steady_clock::now() >= deadline_) {
                std::fprintf(stderr,
                             "[rank %d] %s still running after %.0f s: probably waiting in a "
                             "collective that a failed rank skipped; ending the job\n",
                             rank_, what_.c_str(), limit_);
                std::fflush(stderr);
                std::fflush(stdout);
                std::_Exit(3);
            }
        }
    }

    int rank_;
    double limit_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::thread thread_;
    bool armed_ = false, stop_ = false;
    std::string what_;
    std::chrono::steady_clock::time_point deadline_;
};

std::string test_name(const ::testing::TestInfo& t) {
    return std::string(t.test_suite_name()) + "." + t.name();
}

// On ranks other than 0, in place of GoogleTest's printer: failures only, rank-prefixed.
class FailurePrinter : public ::testing::EmptyTestEventListener {
  public:
    explicit FailurePrinter(int rank) : rank_(rank) {}
    void OnTestPartResult(const ::testing::TestPartResult& r) override {
        if (!r.failed()) return;
        std::string text = prefix() + (r.file_name() ? r.file_name() : "unknown file") + ":" +
                           std::to_string(r.line_number()) + ": Failure\n" + prefix();
        for (const char* m = r.message(); *m; ++m) {
            text.push_back(*m);
            if (*m == '\n') text.append(prefix());
        }
        std::printf("%s\n", text.c_str());
        std::fflush(stdout);
    }
    void OnTestEnd(const ::testing::TestInfo& t) override {
        if (!t.result()->Failed()) return;
        std::printf("%s[  FAILED  ] %s\n", prefix().c_str(), test_name(t).c_str());
        std::fflush(stdout);
    }

  private:
    std::string prefix() const { return "[rank " + std::to_string(rank_) + "] "; }
    int rank_;
};

// Arms the watchdog for each test; afterwards gathers every rank's verdict on rank 0.
class RankSync : public ::testing::EmptyTestEventListener {
  public:
    explicit RankSync(Watchdog& dog) : dog_(dog) {}
    void OnTestStart(const ::testing::TestInfo& t) override { dog_.arm(test_name(t)); }
    void OnTestEnd(const ::testing::TestInfo& t) override {
        moe::comm::Comm& c = world();
        int64_t failed = t.result()->Failed() ? 1 : 0;
        std::vector<int64_t> all(c.size());
        try {
            c.gather(&failed, sizeof failed, all.data(), 0);
        } catch (const moe::Error& e) {
            std::fprintf(stderr, "[rank %d] after %s: %s\n", c.rank(), test_name(t).c_str(),
                         e.what());
            std::fflush(stderr);
            std::_Exit(4);
        }
        dog_.disarm();
        if (c.rank() != 0) return;
        std::string ranks;
        for (int r = 0; r < c.size(); ++r)
            if (all[r]) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
        if (ranks.empty()) return;
        const std::string line = test_name(t) + " failed on rank(s) " + ranks;
        std::printf("[  FAILED  ] %s\n", line.c_str());
        std::fflush(stdout);
        failed_.push_back(line);
    }
    const std::vector<std::string>& failed() const { return failed_; }

  private:
    Watchdog& dog_;
    std::vector<std::string> failed_;  // rank 0 only
};

double timeout_seconds() {
    const char* s = std::getenv("MOE_MPI_TEST_TIMEOUT");
    const double v = s ? std::atof(s) : 0.0;
    return v > 0 ? v : 60.0;
}

}  // namespace

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    try {
        moe::test::g_world = moe::comm::make_mpi_comm();
    } catch (const moe::Error& e) {
        std::fprintf(stderr, "cannot start MPI: %s\n", e.what());
        return 2;
    }
    moe::comm::Comm& c = world();
    const int rank = c.rank();

    Watchdog dog(rank, timeout_seconds());
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    if (rank != 0) {
        delete listeners.Release(listeners.default_result_printer());
        listeners.Append(new FailurePrinter(rank));
    } else {
        std::printf("%s\n", c.describe());
    }
    auto* sync = new RankSync(dog);  // owned by `listeners`
    listeners.Append(sync);

    const int rc = RUN_ALL_TESTS();
    const int local = ::testing::UnitTest::GetInstance()->failed_test_count();
    int64_t failures = rc != 0 ? std::max(local, 1) : 0;
    c.allreduce_sum(&failures, 1);
    if (rank == 0 && failures > 0) {
        std::printf("%lld failed test result(s) over %d ranks:\n", static_cast<long long>(failures),
                    c.size());
        for (const std::string& line : sync->failed()) std::printf("  %s\n", line.c_str());
        std::fflush(stdout);
    }
    moe::test::g_world.reset();
    return failures > 0 ? 1 : 0;
}
