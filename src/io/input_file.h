// Opening files named by users: configs, corpora, checkpoints, tokenizers.
//
// A path can name something that is not a file: a FIFO, where open() blocks until a writer
// appears (forever, from a typo'd `mkfifo`), or /dev/zero and /dev/urandom, which read
// until memory runs out. So every input is opened without blocking, must be a regular file,
// and has its size checked against a limit before a byte is read. Errors name the path and
// what it is ("a FIFO", "a character device", "a directory").
#pragma once

#include <cstdint>
#include <string>

namespace moe::io {

// Opens `path` read-only (O_NONBLOCK, so a FIFO cannot block) and returns the descriptor
// of a regular file; its size in *size. Throws moe::Error naming `path` and `role` (e.g.
// "config file", "checkpoint") when it is missing, unreadable or not a regular file.
int open_regular_file(const std::string& path, const std::string& role, uint64_t* size);

// The whole regular file, refusing files over `max_bytes` before reading.
std::string read_regular_file(const std::string& path, const std::string& role, uint64_t max_bytes);

// "a FIFO", "a directory", "a character device", ... for an st_mode.
const char* file_kind(unsigned mode);

}  // namespace moe::io
