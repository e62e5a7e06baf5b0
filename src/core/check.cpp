#include "core/check.h"

#include <cstring>

namespace moe::detail {

void check_failed(const char* file, int line, const char* cond, const std::string& msg) {
    // Keep only the path from src/ on, so messages do not depend on the build machine.
    const char* short_file = std::strstr(file, "src/");
    if (!short_file) short_file = file;
    std::string text = concat(short_file, ":", line, ": ", msg.empty() ? "check failed" : msg,
                              " [", cond, "]");
    throw Error(text);
}

}  // namespace moe::detail
