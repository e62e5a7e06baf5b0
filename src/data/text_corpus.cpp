#include "data/text_corpus.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/check.h"

namespace moe::data {

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) MOE_FAIL(p.string(), ": cannot open for reading");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

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
        const bool separator = fortune_format ? line == "%" : line.find_first_not_of(" \t\r") == std::string::npos;
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
    MOE_REQUIRE(val_fraction > 0 && val_fraction <= 0.5, "data.val_fraction must be in (0, 0.5], got ",
              val_fraction);
    const int64_t val_every = std::max<int64_t>(2, std::llround(1.0 / val_fraction));
    std::vector<std::pair<std::string, fs::path>> files;  // (domain name, path)
    std::stringstream ss(paths);
    for (std::string path; std::getline(ss, path, ':');) {
        if (path.empty()) continue;
        const fs::path root(path);
        std::error_code ec;
        if (fs::is_directory(root, ec)) {
            std::vector<fs::path> found;
            for (const auto& entry : fs::directory_iterator(root))
                if (entry.is_regular_file() && !skip_file(entry.path())) found.push_back(entry.path());
            std::sort(found.begin(), found.end());
            for (const auto& f : found) files.push_back({f.filename().string(), f});
        } else if (fs::is_regular_file(root, ec)) {
            files.push_back({root.filename().string(), root});
        } else {
            MOE_FAIL(path, ": no such file or directory (data.path)");
        }
    }
    TextCorpus corpus;
    for (const auto& [name, path] : files) {
        TextDomain d;
        d.name = name;
        const auto records = split_records(read_file(path));
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

}  // namespace moe::data
