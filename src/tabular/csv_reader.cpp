// CsvReader: a byte-at-a-time RFC 4180 state machine over a buffered FILE*. See csv_reader.h.
#include "tabular/csv_reader.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/check.h"
#include "core/memory_budget.h"
#include "core/parse_number.h"
#include "io/input_file.h"

namespace moe::tabular {

CsvReader::CsvReader(const std::string& path, const CsvOptions& opt) : path_(path), opt_(opt) {
    MOE_REQUIRE(opt.delimiter != '"' && opt.delimiter != '\n' && opt.delimiter != '\r', path,
                ": the CSV delimiter cannot be a quote or a line break");
    MOE_REQUIRE(opt.max_record_bytes >= 1, path, ": max_record_bytes must be >= 1, got ",
                opt.max_record_bytes);
    if (path == "-") {
        file_ = stdin;
        return;
    }
    // open_regular_file refuses FIFOs and devices, which could block or never end.
    const int fd = io::open_regular_file(path, "CSV file", nullptr);
    file_ = ::fdopen(fd, "rb");
    if (!file_) {
        const int err = errno;
        ::close(fd);
        MOE_FAIL(path, ": cannot open CSV file: ", std::strerror(err));
    }
    owns_file_ = true;
    std::setvbuf(file_, nullptr, _IOFBF, size_t(1) << 18);
}

CsvReader::~CsvReader() {
    if (owns_file_) std::fclose(file_);
}

int CsvReader::get() {
    // getc_unlocked: the reader is not shared between threads, and the locking getc would
    // cost more than the parsing.
    const int c = n_pending_ > 0 ? pending_[--n_pending_] : getc_unlocked(file_);
    if (c == '\n') ++line_;
    return c;
}

void CsvReader::unget(int c) {
    MOE_CHECK(n_pending_ < 3, "CsvReader: too many bytes put back");
    if (c == EOF) return;
    if (c == '\n') --line_;
    pending_[n_pending_++] = c;
}

void CsvReader::fail_too_long() const {
    MOE_FAIL(path_, ":", record_line_, ": CSV record longer than max_record_bytes (",
             format_bytes(uint64_t(opt_.max_record_bytes)),
             "); is the file binary, or a quote left open?");
}

bool CsvReader::next(std::vector<std::string>& fields) {
    if (at_start_) {
        at_start_ = false;
        // A UTF-8 byte order mark (EF BB BF), written by some spreadsheet programs. Anything
        // else is put back in order.
        int b[3] = {get(), EOF, EOF};
        if (b[0] == 0xEF) b[1] = get();
        if (b[1] == 0xBB) b[2] = get();
        if (!(b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF))
            for (int i = 2; i >= 0; --i) unget(b[i]);
    }

    // Skip lines holding nothing (LF, CRLF, or a CR at the end of the file).
    int c;
    for (;;) {
        record_line_ = line_;
        c = get();
        if (c == '\n') continue;
        if (c == '\r') {
            const int d = get();
            if (d == '\n') continue;
            if (d == EOF)
                c = EOF;
            else
                unget(d);
        }
        break;
    }
    if (c == EOF) {
        MOE_REQUIRE(!std::ferror(file_), path_, ":", line_,
                    ": cannot read CSV file: ", std::strerror(errno));
        return false;
    }

    const int delim = static_cast<unsigned char>(opt_.delimiter);
    const int64_t max_bytes = opt_.max_record_bytes;
    int64_t bytes = 0;  // of the record so far, delimiters and quotes included
    size_t nf = 0;      // fields started
    // Strings of `fields` are reused: their capacity survives from record to record.
    auto start_field = [&]() -> std::string& {
        if (nf == fields.size()) fields.emplace_back();
        std::string& f = fields[nf++];
        f.clear();
        return f;
    };
    std::string* f = &start_field();
    bool quoted = false;       // inside a quoted field
    bool after_quote = false;  // a quoted field just closed: only a delimiter or the end
    int64_t quote_line = 0;    // line where the open quote is
    for (;; c = get()) {
        if (++bytes > max_bytes) fail_too_long();
        if (quoted) {
            if (c == EOF)
                MOE_FAIL(path_, ":", quote_line, ": unterminated quote: the quoted field opened ",
                         "on line ", quote_line, " (record of line ", record_line_,
                         ") runs to the end of the file");
            if (c == '"') {
                const int d = get();
                if (d == '"') {
                    f->push_back('"');
                    ++bytes;
                } else {
                    unget(d);
                    quoted = false;
                    after_quote = true;
                }
            } else {
                f->push_back(char(c));
            }
            continue;
        }
        if (c == EOF || c == '\n') break;
        if (c == '\r') {
            const int d = get();
            if (d == '\n' || d == EOF) break;
            unget(d);
        }
        if (c == delim) {
            f = &start_field();
            after_quote = false;
            continue;
        }
        if (after_quote)
            MOE_FAIL(path_, ":", line_, ": text after a closing quote in field ", nf,
                     " (1-based) of the record of line ", record_line_, ": '",
                     excerpt(std::string(1, char(c))),
                     "'; a quote inside a quoted field is written \"\"");
        if (c == '"' && f->empty()) {
            // Only a quote that opens the field starts a quoted field (an unquoted field is
            // empty only before its first byte); one later is an ordinary character.
            quoted = true;
            quote_line = line_;
            continue;
        }
        f->push_back(char(c));
    }
    if (c == EOF)
        MOE_REQUIRE(!std::ferror(file_), path_, ":", line_,
                    ": cannot read CSV file: ", std::strerror(errno));
    fields.resize(nf);
    return true;
}

}  // namespace moe::tabular
