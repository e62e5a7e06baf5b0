// JSON read from users and files: parsed with a nesting limit, shown in errors as an
// excerpt.
//
// nlohmann::json's parser keeps its own stack, but dump(), our walks over a document and
// its destructor in older releases recurse once per level: an input of 100,000 nested '['
// (200 KB) overflows the 8 MB stack. No file we read needs more than a few levels (a
// config has 3, a safetensors header 3), so anything deeper than kMaxJsonDepth is refused
// before parsing, with the byte offset where the limit was crossed.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace moe::io {

constexpr int kMaxJsonDepth = 32;

// Throws moe::Error "SOURCE: JSON nested deeper than 32 levels at byte N" when an array or
// object opens below kMaxJsonDepth levels (brackets inside strings do not count), and
// "SOURCE: JSON text holds a NUL byte at byte N": nlohmann's parser takes a NUL as the end
// of its input, so "{...}\0anything" would parse as the part before it.
void check_json_text(std::string_view text, const std::string& source);

// Parses `text` (after check_json_text) with or without comments; errors name `source`.
nlohmann::json parse_json(std::string_view text, const std::string& source,
                          bool allow_comments = false);

// The keys of the top-level object of `text`, which must be valid JSON (parse it first), in
// the order written, repeats included. A parsed nlohmann::json keeps neither order nor
// repeats, and its ordered variant and its parser callback both cost O(n) per key: a
// header of 200,000 tensors took 31 s. This is one linear scan.
std::vector<std::string> top_level_keys(std::string_view text);

// A value for an error message: compact JSON, at most `max_chars`, "..." when cut; bytes
// that are not valid UTF-8 are replaced rather than thrown over.
template <class Json>
std::string json_excerpt(const Json& v, size_t max_chars = 60) {
    std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
    return s;
}

// True when `s` is valid UTF-8 (what JSON text, and so safetensors metadata, must be).
bool is_valid_utf8(std::string_view s);

// `s` with every byte that is not part of valid UTF-8 written as the four characters \xNN,
// so that any file name can be stored in JSON and shown (it is for display: the original
// bytes are not recovered from it).
std::string escape_invalid_utf8(std::string_view s);

}  // namespace moe::io
