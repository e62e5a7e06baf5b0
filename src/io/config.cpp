#include "io/config.h"

#include <algorithm>
#include <sstream>
#include <vector>

#include "core/check.h"
#include "core/parse_number.h"
#include "io/input_file.h"
#include "io/json_text.h"

namespace moe::io {

using json = nlohmann::json;

namespace {
std::vector<std::string> split_key(const std::string& key) {
    std::vector<std::string> parts;
    std::stringstream ss(key);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    return parts;
}

// A config far larger than any real one (ours are under 2 KB) is a wrong path, not a config.
constexpr uint64_t kMaxConfigBytes = 16 << 20;

// Recursion is bounded: documents are parsed with io::kMaxJsonDepth.
void collect_leaves(const json& j, const std::string& prefix, std::vector<std::string>& out) {
    if (j.is_object() && !j.empty()) {
        for (auto it = j.begin(); it != j.end(); ++it)
            collect_leaves(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
    } else {
        out.push_back(prefix);
    }
}

// A key "train.steps" at the top level would be looked up as train -> steps by nobody and
// match the dotted name "train.steps" in finish(): accepted and ignored. Keys are single
// words; sections nest.
void check_key_names(const json& j, const std::string& source, const std::string& prefix) {
    if (!j.is_object()) return;
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& k = it.key();
        const std::string where = prefix.empty() ? "" : " in section '" + prefix + "'";
        MOE_REQUIRE(!k.empty(), source, ": empty key", where);
        MOE_REQUIRE(k.find('.') == std::string::npos, source, ": key '", excerpt(k), "'", where,
                    " contains '.'; nest sections instead, e.g. {\"train\": {\"steps\": 5}}");
        check_key_names(it.value(), source, prefix.empty() ? k : prefix + "." + k);
    }
}

using IntList = std::vector<int64_t>;
using IntLists = std::vector<std::vector<int64_t>>;

bool is_int_list(const json& v) {
    if (!v.is_array()) return false;
    for (const json& x : v)
        if (!x.is_number_integer()) return false;
    return true;
}

bool is_int_lists(const json& v) {
    if (!v.is_array()) return false;
    for (const json& row : v) {
        if (!row.is_array()) return false;
        for (const json& x : row)
            if (!x.is_number_integer()) return false;
    }
    return true;
}

template <class T>
const char* type_name() {
    if constexpr (std::is_same_v<T, IntLists>)
        return "a list of lists of integers";
    else if constexpr (std::is_same_v<T, IntList>)
        return "a list of integers";
    else if constexpr (std::is_same_v<T, bool>)
        return "true or false";
    else if constexpr (std::is_integral_v<T>)
        return "an integer";
    else if constexpr (std::is_floating_point_v<T>)
        return "a number";
    else
        return "a string";
}
}  // namespace

Config::Config(const std::string& text, const std::string& source) : source_(source) {
    doc_ = parse_json(text, source, /*allow_comments=*/true);
    MOE_REQUIRE(doc_.is_object(), source, ": the top level must be a JSON object");
    check_key_names(doc_, source, "");
}

Config Config::from_file(const std::string& path) {
    return Config(read_regular_file(path, "config file", kMaxConfigBytes), path);
}

void Config::set(const std::string& assignment) {
    const size_t eq = assignment.find('=');
    MOE_REQUIRE(eq != std::string::npos && eq > 0, "--set ", assignment,
                ": expected key=value, e.g. --set train.steps=100");
    const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
    json value;
    // Every string a config holds is valid UTF-8 (a file's JSON must be), so it can be
    // saved in a checkpoint's metadata; a --set value that is not is refused here, before
    // a run starts, not when its first checkpoint is written.
    MOE_REQUIRE(is_valid_utf8(assignment), "--set ", excerpt(assignment),
                ": not valid UTF-8 (a path of other bytes cannot be stored in a checkpoint; "
                "rename the file or link it under a UTF-8 name)");
    check_json_text(text, "--set " + key);
    try {
        value = json::parse(text);
    } catch (const json::parse_error&) {
        value = text;                     // a bare word is a string
    } catch (const json::exception& e) {  // valid JSON that cannot be held, e.g. 1e999
        MOE_FAIL("--set ", excerpt(assignment), ": the value cannot be read (",
                 excerpt(e.what(), 120), ")");
    }
    check_key_names(value, "--set " + key, key);
    const std::vector<std::string> parts = split_key(key);
    // "a..b", ".a" and "a." have empty parts: no key is spelt like that.
    MOE_REQUIRE(key.back() != '.' &&
                    std::none_of(parts.begin(), parts.end(), [](auto& p) { return p.empty(); }),
                "--set ", excerpt(assignment), ": '", excerpt(key),
                "' is not a key; keys are words joined by '.', e.g. train.steps");
    // A key of 60,000 parts ("a.a.a...", one argument) would nest the document that deep
    // and every later walk over it would recurse as deep: the key counts against the limit.
    MOE_REQUIRE(parts.size() <= size_t(kMaxJsonDepth), "--set ", excerpt(assignment), ": key has ",
                parts.size(), " parts, more than the ", kMaxJsonDepth, " levels a config may nest");
    json* node = &doc_;
    for (const std::string& part : parts) {
        if (node->is_null()) *node = json::object();  // a new section
        MOE_REQUIRE(node->is_object(), "--set ", assignment, ": '", part,
                    "' is below a value that is not a section");
        node = &(*node)[part];
    }
    *node = value;
}

const json* Config::find(const std::string& key) const {
    const json* node = &doc_;
    for (const std::string& part : split_key(key)) {
        if (!node->is_object() || !node->contains(part)) return nullptr;
        node = &(*node)[part];
    }
    return node;
}

template <class T>
T Config::get(const std::string& key, const T& fallback) {
    read_.insert(key);
    const json* v = find(key);
    if (!v) return fallback;
    bool ok;
    if constexpr (std::is_same_v<T, IntLists>)
        ok = is_int_lists(*v);
    else if constexpr (std::is_same_v<T, IntList>)
        ok = is_int_list(*v);
    else if constexpr (std::is_same_v<T, bool>)
        ok = v->is_boolean();
    else if constexpr (std::is_integral_v<T>)
        ok = v->is_number_integer();
    else if constexpr (std::is_floating_point_v<T>)
        ok = v->is_number();
    else
        ok = v->is_string();
    MOE_REQUIRE(ok, source_, ": key '", key, "' must be ", type_name<T>(), ", got ",
                json_excerpt(*v));
    return v->get<T>();
}

template bool Config::get<bool>(const std::string&, const bool&);
template int64_t Config::get<int64_t>(const std::string&, const int64_t&);
template double Config::get<double>(const std::string&, const double&);
template std::string Config::get<std::string>(const std::string&, const std::string&);
template IntList Config::get<IntList>(const std::string&, const IntList&);
template IntLists Config::get<IntLists>(const std::string&, const IntLists&);

json Config::section(const std::string& key) {
    const json* v = find(key);
    if (!v) return nullptr;
    std::vector<std::string> leaves;
    collect_leaves(*v, key, leaves);
    read_.insert(key);
    read_.insert(leaves.begin(), leaves.end());
    return *v;
}

void Config::finish() const {
    std::vector<std::string> leaves, unknown;
    collect_leaves(doc_, "", leaves);
    for (const auto& leaf : leaves)
        if (!leaf.empty() && !read_.count(leaf)) unknown.push_back(leaf);
    if (unknown.empty()) return;
    std::string list;
    for (const auto& u : unknown) list += (list.empty() ? "'" : ", '") + u + "'";
    MOE_FAIL(source_, ": unknown config key", unknown.size() > 1 ? "s " : " ", list,
             " (see docs/config.md for the keys)");
}

}  // namespace moe::io
