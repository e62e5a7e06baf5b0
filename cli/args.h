// A small command-line parser shared by the subcommands: positional arguments, options
// that take a value (--name VALUE or --name=VALUE) and flags. Anything else is a usage
// error that names the argument.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::cli {

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Args {
    std::vector<std::string> positional;
    std::map<std::string, std::vector<std::string>> values;  // option -> every value given
    std::set<std::string> flags;
    bool help = false;

    bool has(const std::string& name) const { return values.count(name) || flags.count(name); }
    std::string get(const std::string& name, const std::string& fallback) const;
    // The whole value must be an integer in [lo, hi]; errors name the option.
    int64_t get_int(const std::string& name, int64_t fallback, int64_t lo = INT64_MIN,
                    int64_t hi = INT64_MAX) const;
    // A finite number; errors name the option.
    double get_double(const std::string& name, double fallback) const;
};

// argv[0] is the subcommand's name. value_options and flag_options include the leading
// "--". -h / --help set help.
Args parse_args(int argc, char** argv, const std::set<std::string>& value_options,
                const std::set<std::string>& flag_options);

// The first positional argument of an eval/inspect-style command line (the RUN), skipping
// the options that take a value; "" when there is none. Lets `moe eval` hand a run over to
// the command of its model family before parsing the family's own options.
std::string first_run_argument(int argc, char** argv);

}  // namespace moe::cli
