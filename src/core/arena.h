// Arena: one flat, 64-byte aligned block of memory holding a table of named tensors.
//
// Use it in two phases. First declare every tensor with add(); offsets are assigned
// then, each aligned to 64 bytes (one cache line, one AVX-512 register). Then allocate()
// makes the single block, zero-filled. After that, get() returns views, and nothing is
// allocated again: a training step touches only memory that existed before it began.
//
// Parameters, gradients and optimizer moments are three arenas with one layout
// (clone_layout), so an optimizer, a gradient clip or an all-reduce is one loop over a
// flat array, and a checkpoint is one loop over the table.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace moe {

class Arena {
public:
    struct Entry {
        std::string name;
        Shape shape;
        DType dtype;
        size_t offset;  // bytes from the start of the block
    };

    Arena() = default;
    Arena(Arena&&) = default;
    Arena& operator=(Arena&&) = default;

    // Declares a tensor; returns its index. Names must be unique.
    int add(const std::string& name, Shape shape, DType dtype = DType::f32);
    // Makes the block (zero-filled). No add() after this.
    void allocate();
    // A new arena with the same entries and offsets, already allocated.
    Arena clone_layout() const;

    bool allocated() const { return block_ != nullptr; }
    Tensor get(int index) const;
    Tensor get(const std::string& name) const;  // error naming `name` if absent
    int find(const std::string& name) const;    // -1 if absent
    const std::vector<Entry>& entries() const { return entries_; }
    size_t bytes() const { return bytes_; }

    // The whole block as f32 values, for loops over every parameter. Valid only when
    // every entry is f32; padding between entries is zero and stays zero.
    float* f32_data() const;
    size_t f32_count() const { return bytes_ / sizeof(float); }
    void zero();

private:
    struct FreeDeleter {
        void operator()(void* p) const;
    };
    std::vector<Entry> entries_;
    std::unordered_map<std::string, int> index_;
    size_t bytes_ = 0;
    std::unique_ptr<void, FreeDeleter> block_;
};

}  // namespace moe
