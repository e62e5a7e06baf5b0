#include "io/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/check.h"
#include "core/memory_budget.h"

namespace moe::io {

const char* file_kind(unsigned mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

int open_regular_file(const std::string& path, const std::string& role, uint64_t* size) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) MOE_FAIL(path, ": cannot open ", role, ": ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        MOE_FAIL(path, ": cannot stat ", role, ": ", std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        MOE_FAIL(path, ": ", role, " must be a regular file, but this is ", file_kind(st.st_mode));
    }
    // Back to blocking reads: O_NONBLOCK means nothing for a regular file, but leave no
    // surprise for whoever reads the descriptor.
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    if (size) *size = uint64_t(st.st_size);
    return fd;
}

std::string read_regular_file(const std::string& path, const std::string& role,
                              uint64_t max_bytes) {
    uint64_t size = 0;
    const int fd = open_regular_file(path, role, &size);
    if (size > max_bytes) {
        ::close(fd);
        MOE_FAIL(path, ": ", role, " is ", format_bytes(size), ", over the limit of ",
                 format_bytes(max_bytes));
    }
    std::string text(size_t(size), '\0');
    size_t done = 0;
    while (done < text.size()) {
        const ssize_t r = ::read(fd, text.data() + done, text.size() - done);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            const int err = errno;
            ::close(fd);
            MOE_FAIL(path, ": cannot read ", role, ": ", std::strerror(err));
        }
        if (r == 0) break;  // the file shrank while we read: keep what is there
        done += size_t(r);
    }
    ::close(fd);
    text.resize(done);
    return text;
}

}  // namespace moe::io
