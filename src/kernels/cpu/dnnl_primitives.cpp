#include "kernels/cpu/dnnl_primitives.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/check.h"

namespace moe::kernels::cpu {

const dnnl::engine& cpu_engine() {
    static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    return engine;
}

dnnl::primitive_attr user_scratchpad_attr() {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
}

AlignedBuffer::~AlignedBuffer() {
    std::free(data_);
}

void AlignedBuffer::reserve(size_t bytes) {
    if (bytes <= bytes_) return;
    std::free(data_);
    data_ = nullptr;
    bytes_ = 0;
    const size_t rounded = (bytes + 63) / 64 * 64;
    data_ = std::aligned_alloc(64, rounded);
    if (!data_) throw std::bad_alloc();
    // Zeroed so that padding lanes of blocked layouts never hold NaN garbage.
    std::memset(data_, 0, rounded);
    bytes_ = rounded;
}

void execute(const dnnl::primitive& p, const dnnl::stream& s,
             std::initializer_list<dnnl_exec_arg_t> args) {
    const dnnl_status_t st =
        dnnl_primitive_execute(p.get(), s.get(), int(args.size()), args.begin());
    MOE_CHECK(st == dnnl_success, "oneDNN primitive failed with status ", int(st));
    MOE_CHECK(dnnl_stream_wait(s.get()) == dnnl_success, "oneDNN stream wait failed");
}

namespace {
dnnl::reorder make_reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to,
                           bool accumulate, size_t& scratch_bytes) {
    dnnl::primitive_attr attr = user_scratchpad_attr();
    if (accumulate) {
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
    }
    const auto& eng = cpu_engine();
    dnnl::reorder::primitive_desc pd(eng, from, eng, to, attr);
    scratch_bytes = std::max(scratch_bytes, pd.scratchpad_desc().get_size());
    return dnnl::reorder(pd);
}
}  // namespace

void Input::init(const dnnl::memory::desc& user_md, const dnnl::memory::desc& want,
                 size_t& scratch_bytes) {
    const auto& eng = cpu_engine();
    user = dnnl::memory(user_md, eng, DNNL_MEMORY_NONE);
    same = want == user_md;
    if (same) {
        inner = user;
        return;
    }
    buffer.reserve(want.get_size());
    inner = dnnl::memory(want, eng, buffer.data());
    convert = make_reorder(user_md, want, false, scratch_bytes);
}

const dnnl::memory& Input::prepare(const void* ptr, const dnnl::stream& s,
                                   const dnnl::memory& scratchpad) {
    bind(user, ptr);
    if (!same)
        execute(convert, s,
                {{DNNL_ARG_FROM, user.get()},
                 {DNNL_ARG_TO, inner.get()},
                 {DNNL_ARG_SCRATCHPAD, scratchpad.get()}});
    return inner;
}

void Output::init(const dnnl::memory::desc& user_md, const dnnl::memory::desc& have,
                  size_t& scratch_bytes) {
    const auto& eng = cpu_engine();
    user = dnnl::memory(user_md, eng, DNNL_MEMORY_NONE);
    same = have == user_md;
    if (same) {
        inner = user;
        return;
    }
    buffer.reserve(have.get_size());
    inner = dnnl::memory(have, eng, buffer.data());
    convert = make_reorder(have, user_md, false, scratch_bytes);
}

const dnnl::memory& Output::target(void* ptr) {
    bind(user, ptr);
    return inner;
}

void Output::finish(const dnnl::stream& s, const dnnl::memory& scratchpad) {
    if (!same)
        execute(convert, s,
                {{DNNL_ARG_FROM, inner.get()},
                 {DNNL_ARG_TO, user.get()},
                 {DNNL_ARG_SCRATCHPAD, scratchpad.get()}});
}

void Accumulate::init(const dnnl::memory::desc& user_md, const dnnl::memory::desc& have,
                      size_t& scratch_bytes) {
    const auto& eng = cpu_engine();
    user = dnnl::memory(user_md, eng, DNNL_MEMORY_NONE);
    buffer.reserve(have.get_size());
    inner = dnnl::memory(have, eng, buffer.data());
    add = make_reorder(have, user_md, true, scratch_bytes);
    same = have == user_md;
    if (!same) copy = make_reorder(have, user_md, false, scratch_bytes);
}

const dnnl::memory& Accumulate::target(void* ptr, bool accumulate) {
    bind(user, ptr);
    return !accumulate && same ? user : inner;
}

void Accumulate::finish(void* ptr, const dnnl::stream& s, const dnnl::memory& scratchpad,
                        bool accumulate) {
    bind(user, ptr);
    if (!accumulate && same) return;  // the primitive wrote the caller's memory
    execute(accumulate ? add : copy, s,
            {{DNNL_ARG_FROM, inner.get()},
             {DNNL_ARG_TO, user.get()},
             {DNNL_ARG_SCRATCHPAD, scratchpad.get()}});
}

}  // namespace moe::kernels::cpu
