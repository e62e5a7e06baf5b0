#include "io/json_text.h"

#include <cstdio>

#include "core/check.h"
#include "core/parse_number.h"

namespace moe::io {

void check_json_text(std::string_view text, const std::string& source) {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        MOE_REQUIRE(c != '\0', source, ": JSON text holds a NUL byte at byte ", i);
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            MOE_REQUIRE(++depth <= kMaxJsonDepth, source, ": JSON nested deeper than ",
                        kMaxJsonDepth, " levels at byte ", i);
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;  // unbalanced closers are the parser's to report
        }
    }
}

nlohmann::json parse_json(std::string_view text, const std::string& source, bool allow_comments) {
    check_json_text(text, source);
    try {
        return nlohmann::json::parse(text, nullptr, true, allow_comments);
    } catch (const nlohmann::json::exception& e) {
        // The parser quotes the last token it read, which may be megabytes long.
        MOE_FAIL(source, ": not valid JSON: ", excerpt(e.what(), 200));
    }
}

std::vector<std::string> top_level_keys(std::string_view text) {
    std::vector<std::string> keys;
    int depth = 0;
    bool expect_key = false;  // at depth 1, after '{' or ','
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '"') {
            size_t end = i + 1;  // the closing quote: the first one not escaped
            while (end < text.size() && text[end] != '"') end += text[end] == '\\' ? 2 : 1;
            if (depth == 1 && expect_key) {
                // Decoding escapes (\u00e9, \") is the parser's job; a key is short.
                keys.push_back(
                    nlohmann::json::parse(text.substr(i, end + 1 - i)).get<std::string>());
                expect_key = false;
            }
            i = end;
        } else if (c == '{' || c == '[') {
            ++depth;
            expect_key = depth == 1 && c == '{';
        } else if (c == '}' || c == ']') {
            --depth;
        } else if (c == ',' && depth == 1) {
            expect_key = true;
        }
    }
    return keys;
}

bool is_valid_utf8(std::string_view s) {
    return escape_invalid_utf8(s).size() == s.size();
}

std::string escape_invalid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
        const unsigned char c = b(i);
        size_t len = c < 0x80           ? 1
                     : (c >> 5) == 0x6  ? 2
                     : (c >> 4) == 0xe  ? 3
                     : (c >> 3) == 0x1e ? 4
                                        : 0;
        bool ok = len > 0 && i + len <= s.size();
        for (size_t k = 1; ok && k < len; ++k) ok = (b(i + k) & 0xc0) == 0x80;
        if (ok && len > 1) {
            // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are invalid too.
            uint32_t cp = c & (0xff >> (len + 1));
            for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (b(i + k) & 0x3f);
            const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
            ok = cp >= min_cp[len] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
        }
        if (ok) {
            out.append(s.substr(i, len));
            i += len;
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
            ++i;
        }
    }
    return out;
}

}  // namespace moe::io
