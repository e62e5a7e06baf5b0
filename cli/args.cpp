#include "cli/args.h"

#include "core/check.h"
#include "core/parse_number.h"

namespace moe::cli {

Args parse_args(int argc, char** argv, const std::set<std::string>& value_options,
                const std::set<std::string>& flag_options) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "-h" || arg == "--help") {
            a.help = true;
            continue;
        }
        if (arg.rfind("--", 0) != 0 || arg == "--") {
            a.positional.push_back(arg);
            continue;
        }
        std::string value;
        bool inline_value = false;
        if (const size_t eq = arg.find('='); eq != std::string::npos) {
            value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
            inline_value = true;
        }
        if (flag_options.count(arg) && !inline_value) {
            a.flags.insert(arg);
        } else if (value_options.count(arg)) {
            if (!inline_value) {
                if (i + 1 >= argc) throw UsageError("option " + arg + " needs a value");
                value = argv[++i];
            }
            a.values[arg].push_back(value);
        } else {
            throw UsageError("unknown option '" + arg + "'");
        }
    }
    return a;
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
    auto it = values.find(name);
    return it == values.end() ? fallback : it->second.back();
}

int64_t Args::get_int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const {
    auto it = values.find(name);
    if (it == values.end()) return fallback;
    try {
        return parse_int64(it->second.back(), "option " + name, lo, hi);
    } catch (const Error& e) {
        throw UsageError(e.what());
    }
}

double Args::get_double(const std::string& name, double fallback) const {
    auto it = values.find(name);
    if (it == values.end()) return fallback;
    try {
        return parse_double(it->second.back(), "option " + name);
    } catch (const Error& e) {
        throw UsageError(e.what());
    }
}

std::string first_run_argument(int argc, char** argv) {
    // Every option of eval, inspect and score that takes a value (any family's).
    static const std::set<std::string> takes_value = {
        "--data", "--windows", "--batch", "--threads", "--split", "--out", "--layer"};
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg.rfind("--", 0) == 0) {
            if (takes_value.count(arg)) ++i;  // skip its value
            continue;
        }
        if (arg == "-h") continue;
        return arg;
    }
    return "";
}

}  // namespace moe::cli
