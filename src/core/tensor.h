// Tensor: a non-owning view of memory with a shape, strides, dtype and device.
//
// Memory is owned elsewhere (an Arena, a mapped file, a std::vector); a Tensor is cheap to
// copy and never frees anything. Strides are in elements. Up to kMaxDims dimensions.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/check.h"
#include "core/dtype.h"

namespace moe {

constexpr int kMaxDims = 6;

struct Shape {
    std::array<int64_t, kMaxDims> dims{};
    int rank = 0;

    Shape() = default;
    Shape(std::initializer_list<int64_t> d);
    template <class It>
    static Shape from(It begin, It end) {
        Shape s;
        for (It it = begin; it != end; ++it) {
            MOE_CHECK(s.rank < kMaxDims, "shape has more than ", kMaxDims, " dimensions");
            s.dims[s.rank++] = int64_t(*it);
        }
        return s;
    }

    int64_t operator[](int i) const;
    int64_t numel() const;
    bool operator==(const Shape& o) const;
    std::string str() const;  // "[4, 8]"
};

template <class T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::bf16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }

struct Tensor {
    void* data = nullptr;
    Shape shape;
    std::array<int64_t, kMaxDims> strides{};
    DType dtype = DType::f32;
    Device device = Device::cpu;

    Tensor() = default;
    // A contiguous (row-major) view of `data`.
    Tensor(void* data, Shape shape, DType dtype = DType::f32);

    int rank() const { return shape.rank; }
    int64_t dim(int i) const { return shape[i]; }
    int64_t numel() const { return shape.numel(); }
    size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
    bool is_contiguous() const;

    // Typed pointer; checks that T matches the dtype.
    template <class T>
    T* ptr() const {
        MOE_CHECK(dtype_of<T>() == dtype, "tensor of dtype ", dtype_name(dtype), " read as ",
                  dtype_name(dtype_of<T>()));
        return static_cast<T*>(data);
    }

    // Same memory, new shape with the same element count. Requires contiguity.
    Tensor reshape(Shape new_shape) const;
    // Rows [begin, end) of the first dimension.
    Tensor slice(int64_t begin, int64_t end) const;
    // One index of the first dimension, dropping that dimension.
    Tensor operator[](int64_t i) const;

    std::string str() const;  // "f32[4, 8]"
};

// Checks that `t` has exactly `expected` as its shape; `what` names the op and argument.
void check_shape(const Tensor& t, const Shape& expected, const char* what);

}  // namespace moe
