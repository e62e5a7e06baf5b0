// AtomicFile: write a file so that readers see either the old content or the new, whole.
//
// Bytes go to "PATH.tmp.PID" beside the target; commit() flushes, fsyncs, renames over
// PATH and fsyncs the directory. If commit() is never reached (an exception, Ctrl-C), the
// destructor removes the temporary file and PATH is untouched.
#pragma once

#include <cstddef>
#include <string>

namespace moe::io {

class AtomicFile {
public:
    explicit AtomicFile(const std::string& path);
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(const void* data, size_t n);
    void commit();

private:
    std::string path_, tmp_path_;
    int fd_ = -1;
};

// Writes a whole text file atomically.
void write_file_atomic(const std::string& path, const std::string& content);

}  // namespace moe::io
