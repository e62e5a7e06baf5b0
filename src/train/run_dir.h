// A run directory (out_dir) owned by one training run at a time.
//
// Two mistakes cost users whole runs: starting `moe train` again without --resume, which
// replaced a long run's checkpoint with a short one, and starting two runs on one out_dir,
// whose saves and metrics lines interleaved. So a run first locks its out_dir (flock on
// OUT_DIR/.moe.lock, released by the kernel however the process ends, kill -9 included),
// then a fresh start refuses a directory that already holds a checkpoint unless told to
// overwrite it. Temporary files left by a save that was killed mid-write
// (checkpoint.safetensors.tmp.PID.N) are removed once the lock is held, when no other
// process can be writing them.
#pragma once

#include <string>

namespace moe::train {

// How a run treats what its out_dir already holds.
enum class StartMode {
    fresh,      // refuse an out_dir that holds a checkpoint
    resume,     // continue from the checkpoint (which must exist)
    overwrite,  // start again, replacing the checkpoint, metrics and TensorBoard files
};

class RunDirLock {
  public:
    // Creates `dir` if needed and locks it, or throws an error naming the process that
    // holds it ("runs/x is in use by another run (pid 1234, started 2026-12-06 10:31:02)").
    explicit RunDirLock(const std::string& dir);
    ~RunDirLock();
    RunDirLock(const RunDirLock&) = delete;
    RunDirLock& operator=(const RunDirLock&) = delete;

  private:
    int fd_ = -1;
};

// With the lock held: checks `mode` against the checkpoint at `checkpoint`, removes stale
// temporary files of earlier saves (saying how many), and for overwrite removes the old
// metrics and TensorBoard files. Throws, before anything is removed, when a fresh start
// meets an existing checkpoint or a resume finds none.
void prepare_run_dir(const std::string& dir, const std::string& checkpoint, StartMode mode);

}  // namespace moe::train
