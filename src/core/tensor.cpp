#include "core/tensor.h"

namespace moe {

Shape::Shape(std::initializer_list<int64_t> d) {
    MOE_CHECK(d.size() <= size_t(kMaxDims), "shape has ", d.size(), " dimensions, at most ",
              kMaxDims, " allowed");
    for (int64_t v : d) dims[rank++] = v;
}

int64_t Shape::operator[](int i) const {
    if (i < 0) i += rank;
    MOE_CHECK(i >= 0 && i < rank, "dimension ", i, " out of range for shape ", str());
    return dims[i];
}

int64_t Shape::numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= dims[i];
    return n;
}

bool Shape::operator==(const Shape& o) const {
    if (rank != o.rank) return false;
    for (int i = 0; i < rank; ++i)
        if (dims[i] != o.dims[i]) return false;
    return true;
}

std::string Shape::str() const {
    std::string s = "[";
    for (int i = 0; i < rank; ++i) {
        if (i) s += ", ";
        s += std::to_string(dims[i]);
    }
    return s + "]";
}

Tensor::Tensor(void* d, Shape s, DType t) : data(d), shape(s), dtype(t) {
    int64_t stride = 1;
    for (int i = shape.rank - 1; i >= 0; --i) {
        MOE_CHECK(shape.dims[i] >= 0, "negative dimension in shape ", shape.str());
        strides[i] = stride;
        stride *= shape.dims[i];
    }
}

bool Tensor::is_contiguous() const {
    int64_t stride = 1;
    for (int i = shape.rank - 1; i >= 0; --i) {
        if (shape.dims[i] != 1 && strides[i] != stride) return false;
        stride *= shape.dims[i];
    }
    return true;
}

Tensor Tensor::reshape(Shape new_shape) const {
    MOE_CHECK(is_contiguous(), "reshape of non-contiguous tensor ", str());
    MOE_CHECK(new_shape.numel() == numel(), "cannot reshape ", str(), " to ", new_shape.str());
    return Tensor(data, new_shape, dtype);
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
    MOE_CHECK(rank() >= 1 && 0 <= begin && begin <= end && end <= dim(0), "slice [", begin, ", ",
              end, ") out of range for ", str());
    Tensor t = *this;
    t.shape.dims[0] = end - begin;
    t.data = static_cast<char*>(data) + begin * strides[0] * int64_t(dtype_size(dtype));
    return t;
}

Tensor Tensor::operator[](int64_t i) const {
    MOE_CHECK(rank() >= 1 && 0 <= i && i < dim(0), "index ", i, " out of range for ", str());
    Tensor t;
    t.data = static_cast<char*>(data) + i * strides[0] * int64_t(dtype_size(dtype));
    t.dtype = dtype;
    t.device = device;
    t.shape.rank = rank() - 1;
    for (int d = 1; d < rank(); ++d) {
        t.shape.dims[d - 1] = shape.dims[d];
        t.strides[d - 1] = strides[d];
    }
    return t;
}

std::string Tensor::str() const { return std::string(dtype_name(dtype)) + shape.str(); }

void check_shape(const Tensor& t, const Shape& expected, const char* what) {
    MOE_CHECK(t.shape == expected, what, ": expected shape ", expected.str(), ", got ",
              t.shape.str());
}

}  // namespace moe
