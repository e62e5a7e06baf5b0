#include "train/checkpoint.h"

#include <cstring>
#include <set>

#include "io/safetensors.h"

namespace moe::train {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

const RowShard* find_shard(const std::vector<RowShard>& shards, const std::string& name) {
    for (const RowShard& r : shards)
        if (r.name == name) return &r;
    return nullptr;
}

// The shape an entry has in the file: its own, or the whole tensor's for a shard.
Shape file_shape(const Arena::Entry& e, const RowShard* shard) {
    Shape s = e.shape;
    if (shard) s.dims[0] = shard->global_rows;
    return s;
}

}  // namespace

void save_checkpoint(const std::string& path, const std::vector<CheckpointGroup>& groups,
                     const std::map<std::string, std::string>& metadata,
                     const std::vector<RowShard>& shards, comm::Comm* comm) {
    const bool distributed = comm && comm->size() > 1;
    const bool writer = !distributed || comm->rank() == 0;
    std::vector<io::TensorToSave> tensors;
    std::vector<std::vector<std::byte>> gathered;  // whole sharded tensors (writer only)
    for (const auto& g : groups) {
        MOE_CHECK(g.arena != nullptr, "save_checkpoint: group '", g.prefix, "' has no arena");
        MOE_CHECK(g.arena->allocated(), "save_checkpoint: arena of group '", g.prefix,
                  "' is not allocated");
        const auto& entries = g.arena->entries();
        for (size_t i = 0; i < entries.size(); ++i) {
            const Tensor local = g.arena->get(int(i));
            const RowShard* shard = distributed ? find_shard(shards, entries[i].name) : nullptr;
            if (!shard) {
                if (writer) tensors.push_back({g.prefix + entries[i].name, local});
                continue;
            }
            MOE_CHECK(local.shape[0] * comm->size() == shard->global_rows,
                      "save_checkpoint: shard '", shard->name, "' has ", local.shape[0],
                      " rows on each of ", comm->size(), " ranks, not ", shard->global_rows);
            std::vector<std::byte> whole(writer ? local.nbytes() * size_t(comm->size()) : 0);
            comm->gather(local.data, int64_t(local.nbytes()), writer ? whole.data() : nullptr, 0);
            if (!writer) continue;
            gathered.push_back(std::move(whole));
            tensors.push_back(
                {g.prefix + entries[i].name,
                 Tensor(gathered.back().data(), file_shape(entries[i], shard), local.dtype)});
        }
    }
    if (!distributed) {
        io::save_safetensors(path, tensors, metadata);
        return;
    }
    // Rank 0 writes; the others learn whether it worked, so no rank carries on (or waits
    // forever) after a failed save.
    std::string error;
    if (writer) {
        try {
            io::save_safetensors(path, tensors, metadata);
        } catch (const std::exception& e) {
            error = e.what();
        }
    }
    int64_t failed = error.empty() ? 0 : 1;
    comm->allreduce_max(&failed, 1);
    if (failed) MOE_FAIL(writer ? error : path + ": rank 0 failed to write the checkpoint");
}

std::map<std::string, std::string> load_checkpoint(const std::string& path,
                                                   const std::vector<CheckpointTarget>& groups,
                                                   const std::vector<std::string>& ignore_prefixes,
                                                   const std::vector<RowShard>& shards) {
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
            const Shape want = file_shape(e, find_shard(shards, e.name));
            if (!(info.shape == want) || info.dtype != e.dtype)
                MOE_FAIL(path, ": tensor '", name, "' is ", dtype_name(info.dtype),
                         info.shape.str(), " in the checkpoint but ", dtype_name(e.dtype),
                         want.str(), " in the model");
            file.check_finite(name);  // a NaN loaded silently poisons every later step
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
            auto bytes = file.bytes(g.prefix + entries[i].name);
            const Tensor dst = g.arena->get(int(i));
            if (const RowShard* shard = find_shard(shards, entries[i].name)) {
                // This rank's rows of the whole tensor: one contiguous byte range.
                const size_t row_bytes = dst.nbytes() / size_t(dst.shape[0]);
                bytes = bytes.subspan(size_t(shard->first_row) * row_bytes, dst.nbytes());
            }
            MOE_CHECK(bytes.size() == dst.nbytes(), "load_checkpoint: size mismatch");
            if (!bytes.empty()) std::memcpy(dst.data, bytes.data(), bytes.size());
        }
    }
    return file.metadata();
}

}  // namespace moe::train
