// Always-on and debug-only checks.
//
// MOE_CHECK(cond, parts...) stays on in every build: it guards inputs, shapes and file
// contents, where a wrong value would otherwise give a silently wrong result. On failure
// it throws moe::Error whose message is one line: "file:line: message [cond]".
// MOE_DCHECK is for hot loops: it compiles to nothing unless NDEBUG is undefined.
// MOE_FAIL(parts...) throws a user-facing moe::Error without a source location; use it
// for bad input that the user must fix (a file, a config key), where the location in our
// source would only distract. MOE_REQUIRE(cond, parts...) is its conditional form.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace moe {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
    std::ostringstream os;
    (os << ... << parts);
    return os.str();
}

[[noreturn]] void check_failed(const char* file, int line, const char* cond, const std::string& msg);

}  // namespace detail
}  // namespace moe

#define MOE_CHECK(cond, ...)                                                                 \
    do {                                                                                     \
        if (!(cond)) [[unlikely]]                                                            \
            ::moe::detail::check_failed(__FILE__, __LINE__, #cond,                           \
                                        ::moe::detail::concat("" __VA_OPT__(, ) __VA_ARGS__)); \
    } while (0)

#define MOE_FAIL(...) throw ::moe::Error(::moe::detail::concat(__VA_ARGS__))

// User-facing check: throws MOE_FAIL(parts...) when cond is false.
#define MOE_REQUIRE(cond, ...)             \
    do {                                   \
        if (!(cond)) MOE_FAIL(__VA_ARGS__); \
    } while (0)

#ifdef NDEBUG
#define MOE_DCHECK(cond, ...) \
    do {                      \
    } while (0)
#else
#define MOE_DCHECK(cond, ...) MOE_CHECK(cond __VA_OPT__(, ) __VA_ARGS__)
#endif
