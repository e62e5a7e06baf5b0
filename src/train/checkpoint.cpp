#include "train/checkpoint.h"

#include <cstring>
#include <set>

#include "io/safetensors.h"

namespace moe::train {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

void save_checkpoint(const std::string& path, const std::vector<CheckpointGroup>& groups,
                     const std::map<std::string, std::string>& metadata) {
    std::vector<io::TensorToSave> tensors;
    for (const auto& g : groups) {
        MOE_CHECK(g.arena != nullptr, "save_checkpoint: group '", g.prefix, "' has no arena");
        MOE_CHECK(g.arena->allocated(), "save_checkpoint: arena of group '", g.prefix,
                  "' is not allocated");
        const auto& entries = g.arena->entries();
        for (size_t i = 0; i < entries.size(); ++i)
            tensors.push_back({g.prefix + entries[i].name, g.arena->get(int(i))});
    }
    io::save_safetensors(path, tensors, metadata);
}

std::map<std::string, std::string> load_checkpoint(
    const std::string& path, const std::vector<CheckpointTarget>& groups,
    const std::vector<std::string>& ignore_prefixes) {
    const io::SafetensorsFile file(path);

    // Pass 1: check everything, so that a bad file leaves every arena as it was.
    std::set<std::string> claimed;
    for (const auto& g : groups) {
        MOE_CHECK(g.arena != nullptr, "load_checkpoint: group '", g.prefix, "' has no arena");
        MOE_CHECK(g.arena->allocated(), "load_checkpoint: arena of group '", g.prefix,
                  "' is not allocated");
        for (const Arena::Entry& e : g.arena->entries()) {
            const std::string name = g.prefix + e.name;
            if (!file.contains(name))
                MOE_FAIL(path, ": checkpoint has no tensor '", name, "' (expected ",
                         dtype_name(e.dtype), e.shape.str(), ")");
            const auto& info = file.info(name);
            if (!(info.shape == e.shape) || info.dtype != e.dtype)
                MOE_FAIL(path, ": tensor '", name, "' is ", dtype_name(info.dtype),
                         info.shape.str(), " in the checkpoint but ", dtype_name(e.dtype),
                         e.shape.str(), " in the model");
            claimed.insert(name);
        }
    }
    std::vector<std::string> unexpected;
    for (const std::string& name : file.names()) {
        if (claimed.count(name)) continue;
        bool ignored = false;
        for (const auto& p : ignore_prefixes) ignored = ignored || starts_with(name, p);
        if (ignored) continue;
        for (const auto& g : groups) {
            if (starts_with(name, g.prefix)) {
                unexpected.push_back(name);
                break;
            }
        }
    }
    if (!unexpected.empty()) {
        // Name at most 10: a checkpoint of another model can hold thousands.
        std::string list;
        for (size_t i = 0; i < unexpected.size() && i < 10; ++i)
            list += (i ? ", '" : "'") + unexpected[i] + "'";
        if (unexpected.size() > 10) list += ", ...";
        MOE_FAIL(path, ": checkpoint has ", unexpected.size(),
                 " unexpected tensor(s) that the model does not have: ", list);
    }

    // Pass 2: copy. Shapes and dtypes matched, so the byte counts match too.
    for (const auto& g : groups) {
        const auto& entries = g.arena->entries();
        for (size_t i = 0; i < entries.size(); ++i) {
            const auto bytes = file.bytes(g.prefix + entries[i].name);
            const Tensor dst = g.arena->get(int(i));
            MOE_CHECK(bytes.size() == dst.nbytes(), "load_checkpoint: size mismatch");
            if (!bytes.empty()) std::memcpy(dst.data, bytes.data(), bytes.size());
        }
    }
    return file.metadata();
}

}  // namespace moe::train
