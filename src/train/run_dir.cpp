#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "core/check.h"

namespace moe::train {

namespace fs = std::filesystem;

namespace {

std::string lock_path(const std::string& dir) {
    return dir + "/.moe.lock";
}

// What the holder wrote into the lock file: "pid 1234, started ...".
std::string read_holder(int fd) {
    char buf[256] = {};
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    std::string s = n > 0 ? std::string(buf, size_t(n)) : "";
    while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
    return s.empty() ? "unknown process" : s;
}

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

RunDirLock::RunDirLock(const std::string& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    MOE_REQUIRE(!ec, dir, ": cannot create the run directory (out_dir): ", ec.message());
    MOE_REQUIRE(fs::is_directory(dir), dir, ": out_dir exists but is not a directory");
    const std::string path = lock_path(dir);
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) MOE_FAIL(path, ": cannot open the run directory's lock: ", std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        const int err = errno;
        const std::string holder = read_holder(fd_);
        ::close(fd_);
        fd_ = -1;
        if (err == EWOULDBLOCK)
            MOE_FAIL(dir, ": in use by another run (", holder,
                     "); wait for it to finish or choose another out_dir");
        MOE_FAIL(path, ": cannot lock the run directory: ", std::strerror(err));
    }
    char when[64] = "";
    const std::time_t now = std::time(nullptr);
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
    const std::string who = "pid " + std::to_string(::getpid()) + ", started " + when + "\n";
    if (::ftruncate(fd_, 0) == 0) {
        const ssize_t w = ::pwrite(fd_, who.data(), who.size(), 0);
        (void)w;  // the holder text is only for the message above; the lock is what counts
    }
}

RunDirLock::~RunDirLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the flock
}

void prepare_run_dir(const std::string& dir, const std::string& checkpoint, StartMode mode) {
    const bool has_checkpoint = fs::exists(checkpoint);
    MOE_REQUIRE(mode != StartMode::resume || has_checkpoint, checkpoint,
                ": no checkpoint to resume from");
    MOE_REQUIRE(mode != StartMode::fresh || !has_checkpoint, dir, ": already holds a checkpoint (",
                fs::path(checkpoint).filename().string(),
                "); continue it with --resume, replace it with --overwrite, or choose another "
                "out_dir");
    const std::string ckpt_name = fs::path(checkpoint).filename().string();
    int stale = 0;
    for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        const bool temp = starts_with(name, ckpt_name + ".tmp.");
        const bool old_output =
            mode == StartMode::overwrite &&
            (name == "metrics.jsonl" || starts_with(name, "events.out.tfevents."));
        if (!temp && !old_output) continue;
        std::error_code ec;
        fs::remove(entry.path(), ec);
        MOE_REQUIRE(!ec, entry.path().string(), ": cannot remove: ", ec.message());
        stale += temp;
    }
    if (stale > 0)
        std::printf("%s: removed %d temporary file%s left by an interrupted save\n", dir.c_str(),
                    stale, stale > 1 ? "s" : "");
}

}  // namespace moe::train
