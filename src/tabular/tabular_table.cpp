// Reading a CSV file against a schema, fitting the encoding on the training rows, and
// encoding rows. See tabular_table.h; the schema's JSON is in tabular_schema.cpp.
#include "tabular/tabular_table.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <string_view>
#include <unordered_map>

#include "core/check.h"
#include "core/parse_number.h"
#include "io/json_text.h"
#include "tabular/csv_reader.h"

namespace moe::tabular {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// A finite number filling the whole (trimmed) field; false otherwise. from_chars takes no
// '+', no spaces and no hex, and "nan"/"inf" are refused as not finite.
bool parse_field(std::string_view text, double* out) {
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, *out);
    return !text.empty() && ec == std::errc() && ptr == end && std::isfinite(*out);
}

// The header's column index of each name; errors name the column and list the header.
std::vector<size_t> find_columns(const std::vector<std::string>& names,
                                 const std::vector<std::string>& header, const std::string& path,
                                 const char* role) {
    std::vector<size_t> idx;
    for (const std::string& name : names) {
        size_t found = header.size();
        for (size_t h = 0; h < header.size(); ++h) {
            if (trim(header[h]) != name) continue;
            MOE_REQUIRE(found == header.size(), path, ":1: ", role, " column \"", name,
                        "\" appears twice in the header (columns ", found + 1, " and ", h + 1, ")");
            found = h;
        }
        if (found == header.size()) {
            std::string list;
            for (const std::string& h : header)
                list += (list.empty() ? "" : ", ") + excerpt(trim(h), 30);
            MOE_FAIL(path, ": ", role, " column \"", name, "\" is not in the header (",
                     header.size(), " columns: ", excerpt(list, 400), ")");
        }
        idx.push_back(found);
    }
    return idx;
}

}  // namespace

RawTable read_table(const TabularSchema& s, const std::string& path, bool with_targets) {
    s.validate();
    CsvReader csv(path);
    std::vector<std::string> fields;
    MOE_REQUIRE(csv.next(fields), path, ": empty CSV file: expected a header line naming the ",
                "columns");
    const std::vector<std::string> header = fields;
    auto names = [](const auto& cols) {
        std::vector<std::string> n;
        for (const auto& c : cols) n.push_back(c.name);
        return n;
    };
    const std::vector<size_t> cat_idx =
        find_columns(names(s.categorical), header, path, "categorical");
    const std::vector<size_t> num_idx = find_columns(names(s.numeric), header, path, "numeric");
    const std::vector<size_t> tgt_idx = with_targets
                                            ? find_columns(names(s.targets), header, path, "target")
                                            : std::vector<size_t>{};
    const size_t C = cat_idx.size(), F = num_idx.size(), K = tgt_idx.size();

    RawTable t;
    t.path = path;
    std::vector<double> nums(F);
    std::vector<float> targets(K);
    while (csv.next(fields)) {
        const int64_t line = csv.line();
        // Rows are checked whole before anything is appended, so a skipped row leaves no
        // trace in the table.
        std::string bad;
        if (fields.size() != header.size()) {
            bad = detail::concat(path, ":", line, ": ", fields.size(), " fields, the header has ",
                                 header.size());
        }
        for (size_t f = 0; bad.empty() && f < F; ++f) {
            const std::string_view v = trim(fields[num_idx[f]]);
            if (v.empty()) {
                nums[f] = std::numeric_limits<double>::quiet_NaN();
            } else if (!parse_field(v, &nums[f])) {
                bad = detail::concat(path, ":", line, ": numeric column \"", s.numeric[f].name,
                                     "\": expected a finite number, got '", excerpt(v), "'");
            } else if (s.numeric[f].transform == "log1p") {
                if (nums[f] <= -1)
                    bad =
                        detail::concat(path, ":", line, ": numeric column \"", s.numeric[f].name,
                                       "\": transform log1p needs a value > -1, got ", excerpt(v));
                else
                    nums[f] = std::log1p(nums[f]);
            }
        }
        for (size_t k = 0; bad.empty() && k < K; ++k) {
            const std::string_view v = trim(fields[tgt_idx[k]]);
            const TargetColumn& tc = s.targets[k];
            double x = 0;
            if (v.empty()) {
                bad = detail::concat(path, ":", line, ": target column \"", tc.name,
                                     "\": empty (every row needs every target)");
            } else if (tc.kind == TargetKind::binary) {
                if (v == "0" || v == "1")
                    targets[k] = v == "1" ? 1.0f : 0.0f;
                else
                    bad = detail::concat(path, ":", line, ": binary target column \"", tc.name,
                                         "\": expected 0 or 1, got '", excerpt(v), "'");
            } else if (parse_field(v, &x) && std::isfinite(float(x))) {
                targets[k] = float(x);
            } else {
                bad = detail::concat(path, ":", line, ": regression target column \"", tc.name,
                                     "\": expected a finite number, got '", excerpt(v), "'");
            }
        }
        if (!bad.empty()) {
            MOE_REQUIRE(s.skip_bad_rows, bad,
                        " (set \"bad_rows\": \"skip\" in data.columns to drop such rows)");
            ++t.skipped;
            continue;
        }
        for (size_t c = 0; c < C; ++c) t.cats.push_back(fields[cat_idx[c]]);
        t.nums.insert(t.nums.end(), nums.begin(), nums.end());
        t.targets.insert(t.targets.end(), targets.begin(), targets.end());
        t.lines.push_back(line);
        ++t.n;
    }
    return t;
}

TabularEncoding fit_encoding(const TabularSchema& s, const RawTable& train) {
    const size_t C = s.categorical.size(), F = s.numeric.size();
    MOE_REQUIRE(train.n >= 1, train.path, ": no data rows to fit the encoding on",
                train.skipped ? detail::concat(" (", train.skipped, " bad rows skipped)") : "");
    MOE_CHECK(train.cats.size() == size_t(train.n) * C && train.nums.size() == size_t(train.n) * F,
              "RawTable of ", train.n, " rows does not match the schema");
    TabularEncoding e;
    e.vocab.resize(C);
    for (size_t c = 0; c < C; ++c) {
        const CategoricalColumn& col = s.categorical[c];
        if (col.hash_buckets > 0) continue;
        // Views into train.cats, which outlives this function: no string is copied twice.
        // Each value's count and first row.
        std::unordered_map<std::string_view, std::pair<int64_t, int64_t>> count;
        for (int64_t r = 0; r < train.n; ++r) {
            const std::string& v = train.cats[size_t(r) * C + c];
            if (v.empty()) continue;
            auto& [n, first] = count.try_emplace(v, 0, r).first->second;
            ++n;
        }
        std::vector<std::pair<std::string_view, int64_t>> kept;
        for (const auto& [v, nf] : count) {
            if (nf.first < col.min_count) continue;
            // The vocabulary goes into the checkpoint's JSON, which must be UTF-8: refuse
            // here, naming the row, rather than when the checkpoint is written.
            MOE_REQUIRE(io::is_valid_utf8(v), train.path, ":",
                        nf.second < int64_t(train.lines.size()) ? train.lines[size_t(nf.second)]
                                                                : nf.second,
                        ": categorical column \"", col.name, "\": value '", excerpt(v),
                        "' is not valid UTF-8 (convert the file, e.g. iconv -f latin1 -t utf-8)");
            kept.emplace_back(v, nf.first);
        }
        // By count, most frequent first, then by value (bytewise): the same vocabulary
        // whatever the order of the rows.
        std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) {
            return a.second != b.second ? a.second > b.second : a.first < b.first;
        });
        e.vocab[c].reserve(kept.size());
        for (const auto& [v, n] : kept) e.vocab[c].emplace_back(v);
    }
    e.mean.assign(F, 0.0);
    e.std.assign(F, 1.0);
    for (size_t f = 0; f < F; ++f) {
        // Two passes in double: the mean first, then the spread around it, which keeps the
        // precision for columns with a large offset (timestamps).
        double sum = 0;
        int64_t n = 0;
        for (int64_t r = 0; r < train.n; ++r) {
            const double x = train.nums[size_t(r) * F + f];
            if (!std::isnan(x)) sum += x, ++n;
        }
        if (n == 0) continue;  // every field empty: encoded as 0 all the same
        const double mean = sum / double(n);
        double ss = 0;
        for (int64_t r = 0; r < train.n; ++r) {
            const double x = train.nums[size_t(r) * F + f];
            if (!std::isnan(x)) ss += (x - mean) * (x - mean);
        }
        const double std = std::sqrt(ss / double(n));
        MOE_REQUIRE(std::isfinite(mean) && std::isfinite(std), train.path, ": numeric column \"",
                    s.numeric[f].name, "\": values too large to standardise (mean ", mean, ", std ",
                    std, ")");
        e.mean[f] = mean;
        e.std[f] = std > 0 ? std : 1.0;
    }
    return e;
}

EncodedRows encode(const TabularSchema& s, const TabularEncoding& e, const RawTable& t) {
    const size_t C = s.categorical.size(), F = s.numeric.size(), K = s.targets.size();
    MOE_CHECK(e.vocab.size() == C && e.mean.size() == F && e.std.size() == F, "encoding of ",
              e.vocab.size(), " categorical and ", e.mean.size(),
              " numeric columns for a schema of ", C, " and ", F);
    MOE_CHECK(t.cats.size() == size_t(t.n) * C && t.nums.size() == size_t(t.n) * F &&
                  (t.targets.empty() || t.targets.size() == size_t(t.n) * K),
              "RawTable of ", t.n, " rows does not match the schema");
    EncodedRows out;
    out.n = t.n;
    out.cats.resize(size_t(t.n) * C);
    out.nums.resize(size_t(t.n) * F);
    out.targets = t.targets;
    for (size_t c = 0; c < C; ++c) {
        const int64_t buckets = s.categorical[c].hash_buckets;
        std::unordered_map<std::string_view, int32_t> row;
        if (buckets == 0) {
            row.reserve(e.vocab[c].size());
            for (size_t i = 0; i < e.vocab[c].size(); ++i)
                row.emplace(e.vocab[c][i], int32_t(i + 1));
        }
        for (int64_t r = 0; r < t.n; ++r) {
            const std::string& v = t.cats[size_t(r) * C + c];
            int32_t& dst = out.cats[size_t(r) * C + c];
            if (v.empty()) {
                dst = 0;
            } else if (buckets > 0) {
                dst = hashed_row(v, buckets);
            } else {
                const auto it = row.find(v);
                dst = it == row.end() ? 0 : it->second;  // unseen or rare: the OOV row
            }
        }
    }
    for (size_t f = 0; f < F; ++f) {
        const double mean = e.mean[f], inv = 1.0 / e.std[f];
        for (int64_t r = 0; r < t.n; ++r) {
            const double x = t.nums[size_t(r) * F + f];
            out.nums[size_t(r) * F + f] = std::isnan(x) ? 0.0f : float((x - mean) * inv);
        }
    }
    return out;
}

int32_t hashed_row(const std::string& v, int64_t buckets) {
    MOE_CHECK(buckets >= 1 && buckets < INT32_MAX, "hash_buckets = ", buckets);
    // FNV-1a, 64 bits: simple, stable across platforms and releases (std::hash is neither).
    uint64_t h = 14695981039346656037ull;
    for (const char ch : v) {
        h ^= uint64_t(static_cast<unsigned char>(ch));
        h *= 1099511628211ull;
    }
    return int32_t(1 + h % uint64_t(buckets));
}

}  // namespace moe::tabular
