// A table of rows for a multi-task model: the schema that names a CSV file's columns, the
// encoding learned from the training file, and encoded rows.
//
// Schema (config "data.columns"): categorical columns become embedding rows, numeric columns
// are standardised, targets are the tasks. Nothing here knows any particular data set: a
// user's CSV works with a schema that names its header's columns (others are ignored).
//
// Schema JSON (config "data.columns"); unknown keys are errors naming them:
//   {"categorical": ["occupation",
//                    {"name": "workclass", "embed_dim": 8, "min_count": 1},
//                    {"name": "user", "hash_buckets": 4096}],
//    "numeric":     ["age", {"name": "hours"}, {"name": "gain", "transform": "log1p"}],
//    "targets":     [{"name": "income_50k", "kind": "binary", "weight": 1.0},
//                    {"name": "rating", "kind": "regression"}],
//    "bad_rows":    "error"}
// A categorical or numeric column may be a plain name (every setting at its default, as
// in the structs below); a target is an object ("kind" defaults to "binary", "weight" to
// 1). Every name is used once across the three lists. Header names are matched after
// trimming spaces and tabs; numbers and targets are trimmed too, categorical values are
// taken as written.
//
// Encoding, fitted on the training rows only and saved in the checkpoint:
//   categorical: each value seen in training gets a row, in order of first appearance
//                after sorting by count (descending) then value, so it does not depend on row
//                order; values seen fewer than min_count times, unseen values and empty fields
//                map to row 0, the out-of-vocabulary row. With hash_buckets = N > 0 the value
//                instead maps to 1 + fnv1a64(value) % N (row 0 stays for empty fields), no
//                vocabulary is kept, and the table has N + 1 rows.
//   numeric:     (x - mean) / std with the training mean and std (std 0 -> 1); an empty
//                field is the mean (0 after standardising).
//   targets:     binary: "0" or "1"; regression: any number. An empty target is a bad row.
// The encoding's JSON, in the schema's column order (a hashed column has an empty
// vocabulary): {"categorical": [{"vocab": ["Private", ...]}, ...],
//               "numeric": [{"mean": 38.6, "std": 13.6}, ...]}
// Vocabulary values must be valid UTF-8 (JSON text): fit_encoding refuses others.
// Bad rows (wrong field count, a non-numeric number, a missing or invalid target) throw an
// error naming file, line and column, or with bad_rows = "skip" are counted and dropped.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moe::tabular {

enum class TargetKind { binary, regression };
const char* target_kind_name(TargetKind k);  // "binary" / "regression"

struct CategoricalColumn {
    std::string name;
    int64_t embed_dim = 8;     // width of its embedding
    int64_t hash_buckets = 0;  // 0: vocabulary from the training file; N > 0: hashed
    int64_t min_count = 1;     // vocabulary: values seen fewer times map to row 0
};

struct NumericColumn {
    std::string name;
    // Applied to the value as read, before standardising: "none" or "log1p" (log(1 + x), for
    // heavy-tailed counts and amounts such as a capital gain that is 0 for most rows and up
    // to 10^5 for a few; a value <= -1 is a bad row).
    std::string transform = "none";
};

struct TargetColumn {
    std::string name;
    TargetKind kind = TargetKind::binary;
    double weight = 1.0;  // weight of this task's loss in the total
};

struct TabularSchema {
    std::vector<CategoricalColumn> categorical;
    std::vector<NumericColumn> numeric;
    std::vector<TargetColumn> targets;
    bool skip_bad_rows = false;  // "bad_rows": "error" (default) or "skip"

    int64_t n_tasks() const { return int64_t(targets.size()); }
    // Errors name the key ("data.columns...") and the value: no column at all, no target,
    // a name used twice, embed_dim < 1, hash_buckets < 0, a weight that is not > 0.
    void validate() const;
};

nlohmann::json to_json(const TabularSchema& s);
// `where` names the source in errors (e.g. "config.json: data.columns").
TabularSchema schema_from_json(const nlohmann::json& j, const std::string& where);

// What fit_encoding learned from the training rows.
struct TabularEncoding {
    std::vector<std::vector<std::string>> vocab;  // [categorical] values of rows 1..n
    std::vector<double> mean, std;                // [numeric]
    // Rows of categorical column c's embedding table (vocabulary + 1, or hash_buckets + 1).
    int64_t table_rows(const TabularSchema& s, int64_t c) const;
};

nlohmann::json to_json(const TabularEncoding& e);
TabularEncoding encoding_from_json(const nlohmann::json& j, const TabularSchema& s,
                                   const std::string& where);

// A CSV file's rows, parsed against the schema but not yet encoded.
struct RawTable {
    std::string path;
    std::vector<std::string> cats;  // [n, C] categorical fields as written
    std::vector<double> nums;       // [n, F] NaN for an empty field
    std::vector<float> targets;     // [n, K] (empty when read without targets)
    std::vector<int64_t> lines;     // [n] the line each row started on
    int64_t n = 0;
    int64_t skipped = 0;  // bad rows dropped (skip_bad_rows)
};

// Reads `path` (header first, columns found by name; a schema column missing from the header
// is an error naming it and listing the header). with_targets = false reads rows for scoring:
// target columns need not exist and are not read.
RawTable read_table(const TabularSchema& s, const std::string& path, bool with_targets);

TabularEncoding fit_encoding(const TabularSchema& s, const RawTable& train);

// Encoded rows, ready for a model.
struct EncodedRows {
    int64_t n = 0;
    std::vector<int32_t> cats;   // [n, C] embedding row of each categorical field
    std::vector<float> nums;     // [n, F] standardised
    std::vector<float> targets;  // [n, K] or empty
};

EncodedRows encode(const TabularSchema& s, const TabularEncoding& e, const RawTable& t);

// Row of value `v` in a hashed column of N buckets: 1 + fnv1a64(v) % N.
int32_t hashed_row(const std::string& v, int64_t buckets);

}  // namespace moe::tabular
