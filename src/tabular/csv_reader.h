// CsvReader: reads a CSV file (RFC 4180) record by record, with the line each record started
// on, so that every later error can name file, line and column.
//
//   - fields are separated by the delimiter (',' by default); a field in double quotes may
//     hold the delimiter, a line break, and "" for one quote character;
//   - lines end in LF or CRLF (a CR before LF is not part of the field);
//   - a UTF-8 byte order mark at the start of the file is skipped;
//   - a line holding nothing at all (not even a delimiter) is skipped;
//   - a record longer than max_record_bytes is an error, not an unbounded allocation;
//   - a quote inside an unquoted field is taken as a plain character (5'10" reads as is).
// Errors (file missing or unreadable, an unterminated quote, text after a closing quote, a
// record too long) throw moe::Error naming the file and line.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace moe::tabular {

struct CsvOptions {
    char delimiter = ',';
    int64_t max_record_bytes = int64_t(1) << 24;  // 16 MiB: far above any real row
};

class CsvReader {
  public:
    // path "-" reads standard input.
    explicit CsvReader(const std::string& path, const CsvOptions& opt = {});
    ~CsvReader();
    CsvReader(const CsvReader&) = delete;
    CsvReader& operator=(const CsvReader&) = delete;

    // Reads the next record into `fields` (resized to its field count). false at the end.
    bool next(std::vector<std::string>& fields);
    // 1-based line number on which the last record returned by next() started.
    int64_t line() const { return record_line_; }
    const std::string& path() const { return path_; }

  private:
    int get();          // next byte or EOF, counting lines
    void unget(int c);  // puts back a byte that get() returned (at most 3 pending)
    [[noreturn]] void fail_too_long() const;

    std::string path_;
    CsvOptions opt_;
    std::FILE* file_ = nullptr;
    bool owns_file_ = false;
    int64_t line_ = 1, record_line_ = 0;
    bool at_start_ = true;
    int pending_[3] = {0, 0, 0};  // bytes put back, last one first out
    int n_pending_ = 0;
};

}  // namespace moe::tabular
