// The fuzz input as a file that the reader under test opens by path.
//
// SafetensorsFile and Config::from_file take a path, as they do in the `moe` command, so the
// bytes must be in a file. An anonymous in-memory file (memfd_create) named
// /proc/self/fd/N is used rather than one in /dev/shm or /tmp: rewriting it costs no
// directory operations at tens of thousands of inputs a second, two harnesses running at
// once cannot collide on a name, and nothing is left behind when the fuzzer is killed.
// The path resolves to a regular file, so the readers' "must be a regular file" checks
// pass exactly as for a file on disk.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace moe::fuzz {

class MemoryFile {
  public:
    explicit MemoryFile(const char* name) {
        fd_ = ::memfd_create(name, MFD_CLOEXEC);
        if (fd_ < 0) die("memfd_create");
        path_ = "/proc/self/fd/" + std::to_string(fd_);
    }
    ~MemoryFile() { ::close(fd_); }
    MemoryFile(const MemoryFile&) = delete;
    MemoryFile& operator=(const MemoryFile&) = delete;

    // Makes the file hold exactly data[0, size) and returns its path.
    const std::string& write(const uint8_t* data, size_t size) {
        if (::ftruncate(fd_, 0) != 0) die("ftruncate");
        for (size_t done = 0; done < size;) {
            const ssize_t n = ::pwrite(fd_, data + done, size - done, off_t(done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) die("pwrite");
            done += size_t(n);
        }
        return path_;
    }

  private:
    // A failure here is the harness's, not the code under test's: stop loudly rather than
    // report a finding that is not one.
    [[noreturn]] static void die(const char* what) {
        std::fprintf(stderr, "fuzz harness: %s failed: %s\n", what, std::strerror(errno));
        std::_Exit(2);
    }

    int fd_ = -1;
    std::string path_;
};

}  // namespace moe::fuzz
