// AtomicFile: write a file so that readers see either the old content or the new, whole.
//
// Bytes go to "PATH.tmp.PID.N" beside the target (N counts the files this process made, so
// two threads saving one path do not share a temporary); commit() fsyncs, closes, renames
// over PATH and fsyncs the directory. If commit() is never reached because of an exception,
// the destructor removes the temporary file; after a crash or a kill a stray PATH.tmp.* may
// remain, but PATH itself is always either the old file or the new one.
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
