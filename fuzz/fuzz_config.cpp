// libFuzzer harness: a training config file with --set overrides, read as `moe train` reads
// it: io::Config::from_file, Config::set for each override, then
// lm::read_lm_train_config.
//
// Input layout: the config file's text, then any number of overrides, each introduced by
// "\n--set " (as if given on the command line) and running to the next one or the end:
//
//   {"model": {"vocab_size": 512}}
//   --set train.steps=5
//   --set moe.router="switch"
//
// Bad input must end in moe::Error; any other exception escaping (std::terminate, reported
// as a crash), a sanitizer report, a leak or a hang is a finding. A config that is accepted
// must also survive what a checkpoint does with it: to_json(...).dump() is stored in the
// checkpoint's metadata and lm_train_config_from_json reads it back on --resume, `moe eval`
// and `moe generate`; that round trip must succeed and give the same config.
//
// And the document an accepted config builds must stay shallow. io::check_json_text refuses
// text nested deeper than io::kMaxJsonDepth, because the walks over a document (dump() for
// an error message, Config::finish) recurse once per level and a deep enough one exhausts
// the stack. A stack overflow needs tens of kilobytes of brackets, more than the fuzzer's
// inputs hold, so the harness checks the depth itself: deeper than twice the limit (room for
// the sections a --set key adds) means a check was bypassed.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/check.h"
#include "fuzz_check.h"
#include "io/config.h"
#include "io/json_text.h"
#include "memory_file.h"
#include "lm/lm_train_config.h"

namespace {

constexpr std::string_view kSetMarker = "\n--set ";

struct Split {
    std::string_view config_text;
    std::vector<std::string> overrides;
};

Split split_input(std::string_view in) {
    Split s;
    size_t at = in.find(kSetMarker);
    s.config_text = in.substr(0, at);
    while (at != std::string_view::npos) {
        const size_t begin = at + kSetMarker.size();
        at = in.find(kSetMarker, begin);
        s.overrides.emplace_back(in.substr(begin, at == std::string_view::npos ? at : at - begin));
    }
    return s;
}

// Nesting depth of a document, without recursion (the point is that it may be deep).
int depth_of(const nlohmann::json& doc) {
    int deepest = 0;
    std::vector<std::pair<const nlohmann::json*, int>> todo = {{&doc, 1}};
    while (!todo.empty()) {
        const auto [node, depth] = todo.back();
        todo.pop_back();
        if (!node->is_structured()) continue;
        deepest = std::max(deepest, depth);
        for (const nlohmann::json& child : *node) todo.emplace_back(&child, depth + 1);
    }
    return deepest;
}

void check_round_trip(const moe::lm::LmTrainConfig& cfg) {
    // What lm_trainer stores in the checkpoint's "config" metadata. A throw here escapes:
    // the config was accepted, so failing to save it is a finding, whatever the type.
    const std::string saved = moe::lm::to_json(cfg).dump();
    moe::lm::LmTrainConfig again;
    try {
        again = moe::lm::lm_train_config_from_json(saved, "round trip");
    } catch (const moe::Error& e) {
        std::fprintf(stderr, "accepted config does not load back from its checkpoint form: %s\n",
                     e.what());
        FUZZ_CHECK(false, "round trip through to_json rejected");
    }
    FUZZ_CHECK(moe::lm::to_json(again) == moe::lm::to_json(cfg),
               "round trip through to_json changed the config");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static moe::fuzz::MemoryFile file("fuzz_config");
    const Split in = split_input(std::string_view(reinterpret_cast<const char*>(data), size));
    const std::string& path =
        file.write(reinterpret_cast<const uint8_t*>(in.config_text.data()), in.config_text.size());
    moe::lm::LmTrainConfig cfg;
    try {
        moe::io::Config c = moe::io::Config::from_file(path);
        for (const std::string& o : in.overrides) c.set(o);
        if (depth_of(c.doc()) > 2 * moe::io::kMaxJsonDepth) {
            std::fprintf(stderr, "config nested %d levels deep\n", depth_of(c.doc()));
            FUZZ_CHECK(false, "a config deeper than twice io::kMaxJsonDepth was accepted");
        }
        cfg = moe::lm::read_lm_train_config(c);
    } catch (const moe::Error&) {
        return 0;  // rejected with a message: the expected outcome for bad input
    }
    check_round_trip(cfg);
    return 0;
}
