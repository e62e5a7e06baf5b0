// Run directories (train/run_dir.h): one run at a time (flock), a fresh start never
// replaces a checkpoint, resume needs one, stale temporaries of killed saves are removed.
#include "train/run_dir.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "test_support.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using train::StartMode;

class RunDir : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = (fs::temp_directory_path() / ("moe_rundir_" + std::to_string(::getpid()))).string();
        fs::remove_all(dir_);
        ckpt_ = dir_ + "/checkpoint.safetensors";
    }
    void TearDown() override { fs::remove_all(dir_); }
    void touch(const std::string& name, const std::string& text = "x") {
        std::ofstream(dir_ + "/" + name) << text;
    }
    std::string dir_, ckpt_;
};

TEST_F(RunDir, SecondLockFailsNamingTheHolder) {
    train::RunDirLock first(dir_);
    // flock locks belong to an open file description: a second open in this very process
    // conflicts just as another process would.
    EXPECT_TRUE(test::throws_error_with(
        [&] { train::RunDirLock second(dir_); },
        {dir_, "in use by another run", "pid " + std::to_string(::getpid())}));
}

TEST_F(RunDir, LockIsReleasedWithItsOwner) {
    { train::RunDirLock first(dir_); }
    EXPECT_NO_THROW(train::RunDirLock again(dir_));
}

TEST_F(RunDir, OutDirThatIsAFileIsAnError) {
    std::ofstream(dir_) << "not a directory";
    EXPECT_TRUE(test::throws_error_with([&] { train::RunDirLock lock(dir_); }, {dir_}));
    fs::remove(dir_);
}

TEST_F(RunDir, FreshStartRefusesAnExistingCheckpointAndTouchesNothing) {
    train::RunDirLock lock(dir_);
    touch("checkpoint.safetensors", "precious");
    touch("metrics.jsonl", "{}\n");
    touch("checkpoint.safetensors.tmp.123.0");
    EXPECT_TRUE(
        test::throws_error_with([&] { train::prepare_run_dir(dir_, ckpt_, StartMode::fresh); },
                                {dir_, "already holds a checkpoint", "--resume", "--overwrite"}));
    EXPECT_TRUE(fs::exists(ckpt_));
    EXPECT_TRUE(fs::exists(dir_ + "/metrics.jsonl"));
    EXPECT_TRUE(fs::exists(dir_ + "/checkpoint.safetensors.tmp.123.0"));  // refused first
}

TEST_F(RunDir, ResumeNeedsACheckpointAndRemovesStaleTemporaries) {
    train::RunDirLock lock(dir_);
    EXPECT_TRUE(
        test::throws_error_with([&] { train::prepare_run_dir(dir_, ckpt_, StartMode::resume); },
                                {ckpt_, "no checkpoint to resume from"}));
    touch("checkpoint.safetensors");
    touch("checkpoint.safetensors.tmp.123.0");
    touch("checkpoint.safetensors.tmp.77.4");
    touch("metrics.jsonl");
    train::prepare_run_dir(dir_, ckpt_, StartMode::resume);
    EXPECT_FALSE(fs::exists(dir_ + "/checkpoint.safetensors.tmp.123.0"));
    EXPECT_FALSE(fs::exists(dir_ + "/checkpoint.safetensors.tmp.77.4"));
    EXPECT_TRUE(fs::exists(ckpt_));
    EXPECT_TRUE(fs::exists(dir_ + "/metrics.jsonl"));  // resume appends to it
}

TEST_F(RunDir, OverwriteClearsTheOldRunsOutputsButKeepsTheCheckpointUntilTheFirstSave) {
    train::RunDirLock lock(dir_);
    touch("checkpoint.safetensors");
    touch("metrics.jsonl");
    touch("events.out.tfevents.1.host");
    touch("notes.txt");
    train::prepare_run_dir(dir_, ckpt_, StartMode::overwrite);
    EXPECT_TRUE(fs::exists(ckpt_));  // replaced atomically by the new run's first save
    EXPECT_FALSE(fs::exists(dir_ + "/metrics.jsonl"));
    EXPECT_FALSE(fs::exists(dir_ + "/events.out.tfevents.1.host"));
    EXPECT_TRUE(fs::exists(dir_ + "/notes.txt"));  // not ours: left alone
}

}  // namespace
}  // namespace moe
