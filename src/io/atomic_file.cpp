#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "core/check.h"

namespace moe::io {

namespace {

// The pid alone is not unique: two threads of one process saving the same path (say, a
// checkpoint and its copy) would share and truncate one temporary file.
std::string temp_path_for(const std::string& path) {
    static std::atomic<uint64_t> counter{0};
    return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_path_(temp_path_for(path)) {
    fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) MOE_FAIL(path_, ": cannot create ", tmp_path_, ": ", std::strerror(errno));
}

AtomicFile::~AtomicFile() {
    if (fd_ >= 0) {
        ::close(fd_);
        ::unlink(tmp_path_.c_str());
    }
}

void AtomicFile::write(const void* data, size_t n) {
    MOE_CHECK(fd_ >= 0, "AtomicFile::write after commit");
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
        const ssize_t w = ::write(fd_, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) MOE_FAIL(path_, ": write to ", tmp_path_, " failed: ", std::strerror(errno));
        // write() returns 0 only when no progress is possible; retrying would spin forever.
        if (w == 0) MOE_FAIL(path_, ": write to ", tmp_path_, " made no progress");
        p += w;
        n -= size_t(w);
    }
}

void AtomicFile::commit() {
    MOE_CHECK(fd_ >= 0, "AtomicFile::commit called twice");
    if (::fsync(fd_) != 0) MOE_FAIL(path_, ": fsync failed: ", std::strerror(errno));
    // close() can report a deferred write error (NFS, quota); a file that failed to close
    // must not replace a good one.
    const int close_rc = ::close(fd_);
    const int close_err = errno;
    fd_ = -1;
    if (close_rc != 0) {
        ::unlink(tmp_path_.c_str());
        MOE_FAIL(path_, ": close of ", tmp_path_, " failed: ", std::strerror(close_err));
    }
    if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp_path_.c_str());
        MOE_FAIL(path_, ": rename from ", tmp_path_, " failed: ", std::strerror(err));
    }
    // Make the rename itself durable.
    const size_t slash = path_.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

void write_file_atomic(const std::string& path, const std::string& content) {
    AtomicFile f(path);
    f.write(content.data(), content.size());
    f.commit();
}

}  // namespace moe::io
