#include "core/arena.h"

#include <cstdlib>
#include <cstring>

#include "core/memory_budget.h"

namespace moe {

namespace {
constexpr size_t kAlign = 64;
size_t round_up(size_t n) {
    return (n + kAlign - 1) / kAlign * kAlign;
}
}  // namespace

void Arena::FreeDeleter::operator()(void* p) const {
    std::free(p);
}

int Arena::add(const std::string& name, Shape shape, DType dtype) {
    MOE_CHECK(!allocated(), "arena: cannot add '", name, "' after allocate()");
    MOE_CHECK(index_.find(name) == index_.end(), "arena: tensor '", name, "' declared twice");
    const size_t nbytes = size_t(shape.numel()) * dtype_size(dtype);
    entries_.push_back({name, shape, dtype, bytes_});
    bytes_ = round_up(bytes_ + nbytes);
    const int id = int(entries_.size()) - 1;
    index_[name] = id;
    return id;
}

void Arena::allocate() {
    MOE_CHECK(!allocated(), "arena: allocate() called twice");
    const size_t n = std::max<size_t>(bytes_, kAlign);
    // Callers check sizes that come from users against the available memory first
    // (core/memory_budget.h); this is the last line, and says so in the user's terms.
    void* p = std::aligned_alloc(kAlign, n);
    MOE_REQUIRE(p != nullptr, "out of memory: cannot allocate ", format_bytes(n), " for ",
                entries_.size(), " tensors (the first '",
                entries_.empty() ? std::string("-") : entries_[0].name, "'); ",
                format_bytes(available_memory_bytes()), " available");
    std::memset(p, 0, n);
    block_.reset(p);
}

Arena Arena::clone_layout() const {
    Arena a;
    a.entries_ = entries_;
    a.index_ = index_;
    a.bytes_ = bytes_;
    a.allocate();
    return a;
}

Tensor Arena::get(int index) const {
    MOE_CHECK(allocated(), "arena: get() before allocate()");
    MOE_CHECK(index >= 0 && size_t(index) < entries_.size(), "arena: no tensor #", index);
    const Entry& e = entries_[index];
    return Tensor(static_cast<char*>(block_.get()) + e.offset, e.shape, e.dtype);
}

Tensor Arena::get(const std::string& name) const {
    const int i = find(name);
    MOE_CHECK(i >= 0, "arena: no tensor named '", name, "'");
    return get(i);
}

int Arena::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? -1 : it->second;
}

float* Arena::f32_data() const {
    MOE_CHECK(allocated(), "arena: f32_data() before allocate()");
    for (const Entry& e : entries_)
        MOE_CHECK(e.dtype == DType::f32, "arena: f32_data() but '", e.name, "' is ",
                  dtype_name(e.dtype));
    return static_cast<float*>(block_.get());
}

void Arena::zero() {
    if (allocated()) std::memset(block_.get(), 0, bytes_);
}

}  // namespace moe
