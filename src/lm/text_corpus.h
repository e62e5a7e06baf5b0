// TextCorpus: text from a file, several files or a directory; each file is a domain.
//
// Records are the unit of the train/validation split: a file in fortune format (records
// separated by lines holding only "%") splits into its fortunes, any other file into its
// paragraphs (blank-line separated). Record i of a domain goes to validation when
// i % val_every == val_every - 1, so the split is deterministic, spread over the whole file,
// and independent of the machine. Records are joined back with a blank line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::lm {

struct TextDomain {
    std::string name;  // file name relative to the corpus root
    std::string train;
    std::string val;
    int64_t train_records = 0, val_records = 0;
};

struct TextCorpus {
    std::vector<TextDomain> domains;

    // path: a file, or a directory whose regular files are read (sorted by name, skipping
    // hidden files and the fortune package's ".dat" / ".u8" companions). Several paths may
    // be given separated by ':' . val_fraction in (0, 0.5].
    static TextCorpus load(const std::string& path, double val_fraction);

    int64_t train_bytes() const;
    int64_t val_bytes() const;
};

// The fortunes package's corpus, used when no data path is configured.
constexpr const char* kDefaultCorpus = "/usr/share/games/fortunes";

}  // namespace moe::lm
