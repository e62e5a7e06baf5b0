// Checkpoints: arenas saved to and restored from one safetensors file.
//
// A checkpoint is a list of groups, each an arena and a name prefix, e.g.
//   {{"", &params}, {"optim.m.", &adam.m()}, {"optim.v.", &adam.v()}}
// Every arena entry becomes the tensor prefix + entry.name, so parameters keep their module
// paths ("layers.3.attn.wq") and a checkpoint is readable by any safetensors tool. The
// caller puts whatever else it needs (config JSON, tokenizer, step counter) in the string
// metadata. Nothing here knows about a model type: the arenas carry all the structure.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/arena.h"
#include "comm/comm.h"

namespace moe::train {

struct CheckpointGroup {
    std::string prefix;
    const Arena* arena;
};

struct CheckpointTarget {
    std::string prefix;
    Arena* arena;
};

// Expert parallelism: the arena entry `name` (in every group) holds the rows
// [first_row, first_row + its rows) of a tensor with global_rows rows in the file. The file
// always holds the whole tensor, so a checkpoint does not depend on the number of ranks.
struct RowShard {
    std::string name;  // arena entry name, e.g. "layers.1.moe.experts.w1"
    int64_t global_rows = 0;
    int64_t first_row = 0;
};

// Writes every entry of every group atomically (the old file survives any failure).
// Tensor names must be unique across groups. With a comm of several ranks (collective):
// sharded entries are gathered in rank order (rank q's rows must follow rank q - 1's),
// the other entries are taken from rank 0 (they are the same on every rank), and rank 0
// writes; every rank returns only after the write, and throws if it failed.
void save_checkpoint(const std::string& path, const std::vector<CheckpointGroup>& groups,
                     const std::map<std::string, std::string>& metadata = {},
                     const std::vector<RowShard>& shards = {}, comm::Comm* comm = nullptr);

// Fills every entry of every group from `path` and returns the file's metadata.
// Errors name the file and the tensor: a tensor that is missing or has another shape or
// dtype, and every unexpected tensor, i.e. one whose name starts with a group's prefix
// without being an entry of that group's arena (with prefix "" every unclaimed tensor is
// unexpected), and a tensor holding NaN or infinity. Tensors whose name starts with one of
// `ignore_prefixes` are skipped, e.g.
// {"optim."} to load only the parameters of a training checkpoint. The file is checked
// completely before any arena is written, so a failed load leaves the arenas unchanged.
// Sharded entries (see RowShard) read only their rows of the file's tensor; every rank
// reads the file itself (all ranks must see it, e.g. on a shared filesystem).
std::map<std::string, std::string> load_checkpoint(
    const std::string& path, const std::vector<CheckpointTarget>& groups,
    const std::vector<std::string>& ignore_prefixes = {}, const std::vector<RowShard>& shards = {});

}  // namespace moe::train
