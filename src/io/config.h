// Config: a JSON document of settings read strictly.
//
// Every key a program reads is looked up through get(); at the end, finish() rejects keys
// nobody read, so a misspelt key ("lerning_rate") is an error naming it instead of being
// silently ignored. Type mismatches name the key, the expected type and the value.
// Overrides "a.b.c=value" (from --set) are applied before reading; the value is parsed as
// JSON when it can be (numbers, true/false, quoted strings) and taken as a string otherwise.
#pragma once

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace moe::io {

class Config {
public:
    Config() : doc_(nlohmann::json::object()) {}
    // Parses `text`; `source` names it in errors (a file path, "--set", "built-in").
    Config(const std::string& text, const std::string& source);
    static Config from_file(const std::string& path);

    // Applies "dotted.key=value". Errors name the override.
    void set(const std::string& assignment);

    // Value at "dotted.key" or `fallback` when absent. T is bool, int64_t, double,
    // std::string, std::vector<int64_t> (a JSON list of integers) or
    // std::vector<std::vector<int64_t>> (a JSON list of integer lists).
    template <class T>
    T get(const std::string& key, const T& fallback);

    // The JSON value at "dotted.key" (null when absent), every key under it counted as read:
    // for a section whose reader checks its own keys (e.g. a table's column schema).
    nlohmann::json section(const std::string& key);

    // Throws naming every key present in the document but never read.
    void finish() const;

    const nlohmann::json& doc() const { return doc_; }
    const std::string& source() const { return source_; }

private:
    const nlohmann::json* find(const std::string& key) const;
    nlohmann::json doc_;
    std::string source_ = "config";
    std::set<std::string> read_;
};

}  // namespace moe::io
