// Strict number parsing for text that comes from users and files: flags, config values,
// checkpoint metadata.
//
// std::stoll accepts "12abc" as 12, " 7" as 7 and "+5"; it throws std::out_of_range with the
// message "stoll" for a 20-digit number. Here the whole string must be the number, in
// range, and an error names what was being read (`what`, e.g. "option --batch" or
// "runs/x/checkpoint.safetensors: metadata 'step'") and the text, shortened if long.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace moe {

// An optional '-' then decimal digits, nothing else; value in [lo, hi].
int64_t parse_int64(std::string_view text, const std::string& what, int64_t lo = INT64_MIN,
                    int64_t hi = INT64_MAX);

// A finite decimal or scientific number ("0.5", "1e-3"), nothing else around it.
double parse_double(std::string_view text, const std::string& what);

// `text` for an error message: at most `max_chars` bytes, with "..." when cut, and bytes
// outside printable ASCII shown as \xNN so a message stays one readable line.
std::string excerpt(std::string_view text, size_t max_chars = 40);

}  // namespace moe
