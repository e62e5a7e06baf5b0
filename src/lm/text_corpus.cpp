#include "lm/text_corpus.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "core/check.h"
#include "core/memory_budget.h"
#include "io/input_file.h"
#include "io/json_text.h"

namespace moe::lm {

namespace fs = std::filesystem;

namespace {

// Peak memory per byte of text while a corpus is read and tokenized: the text itself, its
// lines and records while splitting (about 3 copies at the peak), then 4-byte token ids
// and 4-byte domain labels at about 2.5 bytes of text per token (3.2 bytes). 6 is a
// rounded-down sum: a corpus refused by it certainly does not fit.
constexpr uint64_t kMemoryPerTextByte = 6;

// Splits on lines that hold only "%" (fortune format) if there are any, else on blank lines.
std::vector<std::string> split_records(const std::string& text) {
    std::vector<std::string> records;
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    const bool fortune_format =
        std::any_of(lines.begin(), lines.end(), [](const std::string& l) { return l == "%"; });
    std::string current;
    auto flush = [&] {
        if (current.find_first_not_of(" \t\n\r") != std::string::npos) records.push_back(current);
        current.clear();
    };
    for (const std::string& line : lines) {
        const bool separator =
            fortune_format ? line == "%" : line.find_first_not_of(" \t\r") == std::string::npos;
        if (separator) {
            flush();
        } else {
            current += line;
            current += '\n';
        }
    }
    flush();
    return records;
}

bool skip_file(const fs::path& p) {
    const std::string name = p.filename().string();
    const std::string ext = p.extension().string();
    return name.empty() || name[0] == '.' || ext == ".dat" || ext == ".u8";
}

}  // namespace

TextCorpus TextCorpus::load(const std::string& paths, double val_fraction) {
    MOE_REQUIRE(val_fraction > 0 && val_fraction <= 0.5,
                "data.val_fraction must be in (0, 0.5], got ", val_fraction);
    // 1 / val_fraction can exceed int64 (val_fraction = 1e-20): llround of it is undefined,
    // and in practice gave every 2nd record. Past 2^62 no corpus has that many records.
    const double every = std::round(1.0 / val_fraction);
    const int64_t val_every =
        every >= 0x1p62 ? int64_t(1) << 62 : std::max<int64_t>(2, int64_t(every));
    std::vector<std::pair<std::string, fs::path>> files;  // (domain name, path)
    std::stringstream ss(paths);
    for (std::string path; std::getline(ss, path, ':');) {
        if (path.empty()) continue;
        const fs::path root(path);
        std::error_code ec;
        if (fs::is_directory(root, ec)) {
            std::vector<fs::path> found;
            for (const auto& entry : fs::directory_iterator(root))
                if (entry.is_regular_file() && !skip_file(entry.path()))
                    found.push_back(entry.path());
            std::sort(found.begin(), found.end());
            for (const auto& f : found) files.push_back({f.filename().string(), f});
        } else if (fs::exists(root, ec)) {
            files.push_back({root.filename().string(), root});  // checked when opened below
        } else {
            MOE_FAIL(path, ": no such file or directory (data.path)");
        }
    }
    // Sizes first: an 8 GB file, or several, must be refused before any is read.
    uint64_t total = 0;
    for (const auto& [name, path] : files) {
        uint64_t size = 0;
        ::close(io::open_regular_file(path.string(), "data file", &size));
        total = sat_add(total, size);
    }
    require_memory(sat_mul(total, kMemoryPerTextByte),
                   paths + " (data.path): " + format_bytes(total) + " of text in " +
                       std::to_string(files.size()) + (files.size() > 1 ? " files" : " file") +
                       ", read and tokenized at about " + std::to_string(kMemoryPerTextByte) +
                       " bytes of memory per byte,");
    TextCorpus corpus;
    for (const auto& [name, path] : files) {
        TextDomain d;
        // Names are shown and saved in checkpoints (JSON, UTF-8); a file name can be any bytes.
        d.name = io::escape_invalid_utf8(name);
        const auto records =
            split_records(io::read_regular_file(path.string(), "data file", UINT64_MAX));
        for (size_t i = 0; i < records.size(); ++i) {
            const bool val = int64_t(i % size_t(val_every)) == val_every - 1;
            std::string& dst = val ? d.val : d.train;
            dst += records[i];
            dst += '\n';
            ++(val ? d.val_records : d.train_records);
        }
        if (!d.train.empty()) corpus.domains.push_back(std::move(d));
    }
    MOE_REQUIRE(!corpus.domains.empty(), paths, ": no text found (data.path)");
    MOE_REQUIRE(corpus.val_bytes() > 0, paths, ": data.val_fraction = ", val_fraction,
                " puts no record into validation (every ", val_every,
                "th record of each file); "
                "raise it or add text");
    return corpus;
}

int64_t TextCorpus::train_bytes() const {
    int64_t n = 0;
    for (const auto& d : domains) n += int64_t(d.train.size());
    return n;
}

int64_t TextCorpus::val_bytes() const {
    int64_t n = 0;
    for (const auto& d : domains) n += int64_t(d.val.size());
    return n;
}

}  // namespace moe::lm
