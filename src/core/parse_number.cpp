#include "core/parse_number.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/check.h"

namespace moe {

std::string excerpt(std::string_view text, size_t max_chars) {
    std::string out;
    for (size_t i = 0; i < text.size() && i < max_chars; ++i) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7f) {
            out += char(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    if (text.size() > max_chars) out += "...";
    return out;
}

int64_t parse_int64(std::string_view text, const std::string& what, int64_t lo, int64_t hi) {
    int64_t v = 0;
    const char* end = text.data() + text.size();
    // from_chars takes no leading '+' or whitespace and reports overflow: exactly strict.
    const auto [ptr, ec] = std::from_chars(text.data(), end, v);
    MOE_REQUIRE(!text.empty() && ec != std::errc::invalid_argument && ptr == end, what,
                ": expected an integer, got '", excerpt(text), "'");
    MOE_REQUIRE(ec != std::errc::result_out_of_range && v >= lo && v <= hi, what, ": ",
                excerpt(text), " is out of range [", lo, ", ", hi, "]");
    return v;
}

double parse_double(std::string_view text, const std::string& what) {
    double v = 0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, v);
    MOE_REQUIRE(!text.empty() && ec == std::errc() && ptr == end && std::isfinite(v), what,
                ": expected a finite number, got '", excerpt(text), "'");
    return v;
}

}  // namespace moe
