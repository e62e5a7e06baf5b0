// The schema and the encoding as JSON, and the schema's checks. See tabular_table.h for the
// format; reading, fitting and encoding rows are in tabular_table.cpp.
#include <cmath>
#include <initializer_list>
#include <map>
#include <unordered_set>

#include "core/check.h"
#include "io/json_text.h"
#include "tabular/tabular_table.h"

namespace moe::tabular {

namespace {

using nlohmann::json;

// Far above any useful table and below what would overflow the int32 embedding rows.
constexpr int64_t kMaxHashBuckets = int64_t(1) << 30;
constexpr int64_t kMaxEmbedDim = int64_t(1) << 16;

std::string quoted(const std::string& s) {
    return "\"" + s + "\"";
}

// An object whose keys are all in `allowed`; errors name `key` and the stray key.
void require_object(const json& j, const std::string& key,
                    std::initializer_list<const char*> allowed) {
    MOE_REQUIRE(j.is_object(), key, ": expected an object, got ", io::json_excerpt(j));
    for (const auto& [k, v] : j.items()) {
        bool ok = false;
        for (const char* a : allowed) ok = ok || k == a;
        if (!ok) {
            std::string list;
            for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
            MOE_FAIL(key, ": unknown key ", quoted(k), " (known: ", list, ")");
        }
    }
}

std::string get_string(const json& j, const std::string& key) {
    MOE_REQUIRE(j.is_string(), key, ": expected a string, got ", io::json_excerpt(j));
    return j.get<std::string>();
}

int64_t get_int(const json& j, const std::string& key) {
    MOE_REQUIRE(j.is_number_integer() &&
                    (!j.is_number_unsigned() || j.get<uint64_t>() <= uint64_t(INT64_MAX)),
                key, ": expected an integer, got ", io::json_excerpt(j));
    return j.get<int64_t>();
}

double get_number(const json& j, const std::string& key) {
    MOE_REQUIRE(j.is_number(), key, ": expected a number, got ", io::json_excerpt(j));
    return j.get<double>();
}

const json& get_array(const json& j, const std::string& key) {
    MOE_REQUIRE(j.is_array(), key, ": expected a list, got ", io::json_excerpt(j));
    return j;
}

// "name" of an object column, required.
std::string column_name(const json& j, const std::string& key) {
    MOE_REQUIRE(j.contains("name"), key, ": missing key \"name\"");
    return get_string(j.at("name"), key + ".name");
}

TargetKind target_kind_from(const std::string& v, const std::string& key) {
    if (v == "binary") return TargetKind::binary;
    if (v == "regression") return TargetKind::regression;
    MOE_FAIL(key, ": must be \"binary\" or \"regression\", got ", quoted(v));
}

// The checks of TabularSchema::validate, with errors starting at `prefix`.
void validate_schema(const TabularSchema& s, const std::string& prefix) {
    MOE_REQUIRE(!s.categorical.empty() || !s.numeric.empty(), prefix,
                ": no input column (\"categorical\" and \"numeric\" are both empty)");
    MOE_REQUIRE(!s.targets.empty(), prefix, ": no target column (\"targets\" is empty)");
    // Every name once, across the three lists: a column read twice, or a target that is
    // also an input, is a mistake in the schema.
    std::map<std::string, std::string> seen;  // name -> key where it was first used
    auto check_name = [&](const std::string& name, const std::string& key) {
        MOE_REQUIRE(!name.empty(), key, ".name: must not be empty");
        const auto [it, fresh] = seen.emplace(name, key);
        MOE_REQUIRE(fresh, key, ".name: ", quoted(name), " is used twice (also ", it->second, ")");
    };
    for (size_t i = 0; i < s.categorical.size(); ++i) {
        const CategoricalColumn& c = s.categorical[i];
        const std::string key = prefix + ".categorical[" + std::to_string(i) + "]";
        check_name(c.name, key);
        MOE_REQUIRE(c.embed_dim >= 1 && c.embed_dim <= kMaxEmbedDim, key, ".embed_dim (",
                    quoted(c.name), ") must be in [1, ", kMaxEmbedDim, "], got ", c.embed_dim);
        MOE_REQUIRE(c.hash_buckets >= 0 && c.hash_buckets <= kMaxHashBuckets, key,
                    ".hash_buckets (", quoted(c.name), ") must be in [0, ", kMaxHashBuckets,
                    "], got ", c.hash_buckets);
        MOE_REQUIRE(c.min_count >= 1, key, ".min_count (", quoted(c.name), ") must be >= 1, got ",
                    c.min_count);
    }
    for (size_t i = 0; i < s.numeric.size(); ++i)
        check_name(s.numeric[i].name, prefix + ".numeric[" + std::to_string(i) + "]");
    for (size_t i = 0; i < s.targets.size(); ++i) {
        const TargetColumn& t = s.targets[i];
        const std::string key = prefix + ".targets[" + std::to_string(i) + "]";
        check_name(t.name, key);
        MOE_REQUIRE(std::isfinite(t.weight) && t.weight > 0, key, ".weight (", quoted(t.name),
                    ") must be > 0, got ", t.weight);
    }
}

}  // namespace

const char* target_kind_name(TargetKind k) {
    return k == TargetKind::binary ? "binary" : "regression";
}

void TabularSchema::validate() const {
    validate_schema(*this, "data.columns");
}

nlohmann::json to_json(const TabularSchema& s) {
    json cat = json::array(), num = json::array(), tgt = json::array();
    for (const CategoricalColumn& c : s.categorical)
        cat.push_back({{"name", c.name},
                       {"embed_dim", c.embed_dim},
                       {"hash_buckets", c.hash_buckets},
                       {"min_count", c.min_count}});
    for (const NumericColumn& c : s.numeric) {
        json n = {{"name", c.name}};
        if (c.transform != "none") n["transform"] = c.transform;
        num.push_back(n);
    }
    for (const TargetColumn& t : s.targets)
        tgt.push_back({{"name", t.name}, {"kind", target_kind_name(t.kind)}, {"weight", t.weight}});
    return {{"categorical", cat},
            {"numeric", num},
            {"targets", tgt},
            {"bad_rows", s.skip_bad_rows ? "skip" : "error"}};
}

TabularSchema schema_from_json(const nlohmann::json& j, const std::string& where) {
    require_object(j, where, {"categorical", "numeric", "targets", "bad_rows"});
    TabularSchema s;
    if (j.contains("categorical")) {
        const json& list = get_array(j.at("categorical"), where + ".categorical");
        for (size_t i = 0; i < list.size(); ++i) {
            const std::string key = where + ".categorical[" + std::to_string(i) + "]";
            const json& e = list[i];
            CategoricalColumn c;
            if (e.is_string()) {  // a plain name: every setting at its default
                c.name = e.get<std::string>();
            } else {
                require_object(e, key, {"name", "embed_dim", "hash_buckets", "min_count"});
                c.name = column_name(e, key);
                if (e.contains("embed_dim"))
                    c.embed_dim = get_int(e["embed_dim"], key + ".embed_dim");
                if (e.contains("hash_buckets"))
                    c.hash_buckets = get_int(e["hash_buckets"], key + ".hash_buckets");
                if (e.contains("min_count"))
                    c.min_count = get_int(e["min_count"], key + ".min_count");
            }
            s.categorical.push_back(c);
        }
    }
    if (j.contains("numeric")) {
        const json& list = get_array(j.at("numeric"), where + ".numeric");
        for (size_t i = 0; i < list.size(); ++i) {
            const std::string key = where + ".numeric[" + std::to_string(i) + "]";
            const json& e = list[i];
            NumericColumn c;
            if (e.is_string()) {
                c.name = e.get<std::string>();
            } else {
                require_object(e, key, {"name", "transform"});
                c.name = column_name(e, key);
                if (e.contains("transform")) {
                    MOE_REQUIRE(e["transform"].is_string(), key,
                                ".transform must be \"none\" or \"log1p\", got ",
                                io::json_excerpt(e["transform"]));
                    c.transform = e["transform"].get<std::string>();
                    MOE_REQUIRE(c.transform == "none" || c.transform == "log1p", key,
                                ".transform must be \"none\" or \"log1p\", got \"", c.transform,
                                "\"");
                }
            }
            s.numeric.push_back(c);
        }
    }
    if (j.contains("targets")) {
        const json& list = get_array(j.at("targets"), where + ".targets");
        for (size_t i = 0; i < list.size(); ++i) {
            const std::string key = where + ".targets[" + std::to_string(i) + "]";
            const json& e = list[i];
            require_object(e, key, {"name", "kind", "weight"});
            TargetColumn t;
            t.name = column_name(e, key);
            if (e.contains("kind"))
                t.kind = target_kind_from(get_string(e["kind"], key + ".kind"), key + ".kind");
            if (e.contains("weight")) t.weight = get_number(e["weight"], key + ".weight");
            s.targets.push_back(t);
        }
    }
    if (j.contains("bad_rows")) {
        const std::string v = get_string(j.at("bad_rows"), where + ".bad_rows");
        MOE_REQUIRE(v == "error" || v == "skip", where,
                    ".bad_rows: must be \"error\" or \"skip\", got ", quoted(v));
        s.skip_bad_rows = v == "skip";
    }
    validate_schema(s, where);
    return s;
}

int64_t TabularEncoding::table_rows(const TabularSchema& s, int64_t c) const {
    MOE_CHECK(c >= 0 && c < int64_t(s.categorical.size()) && c < int64_t(vocab.size()),
              "categorical column ", c, " out of range");
    const int64_t buckets = s.categorical[size_t(c)].hash_buckets;
    return buckets > 0 ? buckets + 1 : int64_t(vocab[size_t(c)].size()) + 1;
}

// {"categorical": [{"vocab": ["Private", ...]}, {"vocab": []}],
//  "numeric": [{"mean": 38.6, "std": 13.6}]}, in the schema's column order (a hashed column
// has an empty vocabulary). Reading it back checks the counts against the schema.
nlohmann::json to_json(const TabularEncoding& e) {
    json cat = json::array(), num = json::array();
    for (size_t c = 0; c < e.vocab.size(); ++c) cat.push_back({{"vocab", e.vocab[c]}});
    for (size_t i = 0; i < e.mean.size(); ++i)
        num.push_back({{"mean", e.mean[i]}, {"std", i < e.std.size() ? e.std[i] : 1.0}});
    return {{"categorical", cat}, {"numeric", num}};
}

TabularEncoding encoding_from_json(const nlohmann::json& j, const TabularSchema& s,
                                   const std::string& where) {
    require_object(j, where, {"categorical", "numeric"});
    MOE_REQUIRE(j.contains("categorical") && j.contains("numeric"), where,
                ": needs keys \"categorical\" and \"numeric\"");
    const json& cat = get_array(j.at("categorical"), where + ".categorical");
    const json& num = get_array(j.at("numeric"), where + ".numeric");
    MOE_REQUIRE(cat.size() == s.categorical.size(), where, ".categorical: ", cat.size(),
                " columns, the schema has ", s.categorical.size());
    MOE_REQUIRE(num.size() == s.numeric.size(), where, ".numeric: ", num.size(),
                " columns, the schema has ", s.numeric.size());
    TabularEncoding e;
    for (size_t c = 0; c < cat.size(); ++c) {
        const std::string key = where + ".categorical[" + std::to_string(c) + "]";
        require_object(cat[c], key, {"vocab"});
        std::vector<std::string> vocab;
        if (cat[c].contains("vocab")) {
            const json& v = get_array(cat[c]["vocab"], key + ".vocab");
            vocab.reserve(v.size());
            std::unordered_set<std::string> seen;
            for (size_t i = 0; i < v.size(); ++i) {
                const std::string item = key + ".vocab[" + std::to_string(i) + "]";
                vocab.push_back(get_string(v[i], item));
                MOE_REQUIRE(!vocab.back().empty(), item,
                            ": empty value (empty fields map to row 0)");
                MOE_REQUIRE(seen.insert(vocab.back()).second, item, ": ",
                            quoted(io::json_excerpt(json(vocab.back()))), " is listed twice");
            }
        }
        MOE_REQUIRE(s.categorical[c].hash_buckets == 0 || vocab.empty(), key,
                    ": a vocabulary for the hashed column ", quoted(s.categorical[c].name));
        e.vocab.push_back(std::move(vocab));
    }
    for (size_t i = 0; i < num.size(); ++i) {
        const std::string key = where + ".numeric[" + std::to_string(i) + "]";
        require_object(num[i], key, {"mean", "std"});
        MOE_REQUIRE(num[i].contains("mean") && num[i].contains("std"), key,
                    ": needs keys \"mean\" and \"std\"");
        const double mean = get_number(num[i]["mean"], key + ".mean");
        const double std = get_number(num[i]["std"], key + ".std");
        MOE_REQUIRE(std::isfinite(mean), key, ".mean: must be finite, got ", mean);
        MOE_REQUIRE(std::isfinite(std) && std > 0, key, ".std: must be > 0, got ", std);
        e.mean.push_back(mean);
        e.std.push_back(std);
    }
    return e;
}

}  // namespace moe::tabular
