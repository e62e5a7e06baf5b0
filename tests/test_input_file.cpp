// Opening user-named inputs (io/input_file.h): never blocks on a FIFO, refuses devices and
// directories by name, and refuses oversized files before reading them.
#include "io/input_file.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "test_support.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

class InputFile : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("moe_input_" + std::to_string(::getpid()));
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    fs::path dir_;
};

TEST_F(InputFile, ReadsARegularFile) {
    const fs::path p = dir_ / "a.txt";
    std::ofstream(p) << "hello";
    EXPECT_EQ(io::read_regular_file(p.string(), "config file", 100), "hello");
    uint64_t size = 0;
    ::close(io::open_regular_file(p.string(), "x", &size));
    EXPECT_EQ(size, 5u);
}

// A blocking open() of a FIFO waits for a writer forever. The open runs in a child process,
// so a regression fails this test after 5 s instead of hanging the suite.
TEST_F(InputFile, FifoIsRefusedWithoutBlocking) {
    const fs::path fifo = dir_ / "ckpt.safetensors";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        const std::string msg =
            test::error_of([&] { io::read_regular_file(fifo, "checkpoint", 100); });
        ::_exit(msg.find("a FIFO") != std::string::npos &&
                        msg.find(fifo.string()) != std::string::npos
                    ? 0
                    : 1);
    }
    int status = 0;
    for (int i = 0; i < 500 && ::waitpid(child, &status, WNOHANG) == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (::waitpid(child, &status, WNOHANG) == 0) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
        FAIL() << "opening a FIFO blocked for 5 s";
    }
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "the error did not name the path and 'a FIFO'";
}

TEST_F(InputFile, DevicesAndDirectoriesAreRefusedByKind) {
    EXPECT_TRUE(
        test::throws_error_with([] { io::read_regular_file("/dev/zero", "config file", 1 << 20); },
                                {"/dev/zero", "config file", "a character device"}));
    EXPECT_TRUE(test::throws_error_with(
        [] { io::read_regular_file("/dev/urandom", "data file", UINT64_MAX); },
        {"/dev/urandom", "a character device"}));
    EXPECT_TRUE(test::throws_error_with([&] { io::read_regular_file(dir_, "config file", 100); },
                                        {dir_.string(), "a directory"}));
    EXPECT_TRUE(test::throws_error_with(
        [&] { io::read_regular_file((dir_ / "missing").string(), "config file", 100); },
        {"missing", "cannot open config file", "No such file"}));
}

TEST_F(InputFile, OversizedFileIsRefusedBeforeReading) {
    // Sparse: 8 GB of size and no data, so refusing it must not depend on reading it.
    const fs::path big = dir_ / "big.txt";
    { std::ofstream(big) << ""; }
    fs::resize_file(big, uint64_t(8) << 30);
    EXPECT_TRUE(test::throws_error_with(
        [&] { io::read_regular_file(big.string(), "config file", 16 << 20); },
        {big.string(), "config file is 8.0 GiB", "over the limit of 16.0 MiB"}));
}

}  // namespace
}  // namespace moe
