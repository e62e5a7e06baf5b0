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

namespace moe::train {

struct CheckpointGroup {
    std::string prefix;
    const Arena* arena;
};

struct CheckpointTarget {
    std::string prefix;
    Arena* arena;
};

// Writes every entry of every group atomically (the old file survives any failure).
// Tensor names must be unique across groups.
void save_checkpoint(const std::string& path, const std::vector<CheckpointGroup>& groups,
                     const std::map<std::string, std::string>& metadata = {});

// Fills every entry of every group from `path` and returns the file's metadata.
// Errors name the file and the tensor: a tensor that is missing or has another shape or
// dtype, and every unexpected tensor, i.e. one whose name starts with a group's prefix
// without being an entry of that group's arena (with prefix "" every unclaimed tensor is
// unexpected). Tensors whose name starts with one of `ignore_prefixes` are skipped, e.g.
// {"optim."} to load only the parameters of a training checkpoint. The file is checked
// completely before any arena is written, so a failed load leaves the arenas unchanged.
std::map<std::string, std::string> load_checkpoint(
    const std::string& path, const std::vector<CheckpointTarget>& groups,
    const std::vector<std::string>& ignore_prefixes = {});

}  // namespace moe::train
