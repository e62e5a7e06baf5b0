// MoeBlock: the state and accessors both MoE blocks share, and the factory that picks one
// (see moe_block.h).
#include "moe/moe_block.h"

#include "core/check.h"
#include "moe/moe_layer.h"
#include "moe/soft_moe_layer.h"

namespace moe::sparse {

namespace {
// Buffers used only inside one call: backward gradients (d_*) and scratch. The rest of the
// activation arena is what forward keeps for backward.
bool is_transient(const std::string& name) {
    const size_t dot = name.rfind('.');
    const std::string last = dot == std::string::npos ? name : name.substr(dot + 1);
    return last.rfind("d_", 0) == 0 || last.find("scratch") != std::string::npos;
}

MoeConfig validated(MoeConfig cfg) {
    cfg.validate();
    return cfg;
}
}  // namespace

template <class R>
MoeBlock<R>::MoeBlock(const MoeConfig& cfg, int64_t max_tokens)
    : cfg_(validated(cfg)), max_tokens_(max_tokens) {
    MOE_CHECK(max_tokens >= 1, "MoeLayer: max_tokens must be >= 1, got ", max_tokens);
    stats_.tokens_per_expert.assign(size_t(cfg_.n_experts), 0);
}

template <class R>
double MoeBlock<R>::saved_bytes_per_token() const {
    size_t bytes = 0;
    for (const Arena::Entry& e : acts_.entries())
        if (!is_transient(e.name)) bytes += size_t(e.shape.numel()) * dtype_size(e.dtype);
    return double(bytes) / double(max_tokens_);
}

template <class R>
std::unique_ptr<MoeBlock<R>> make_moe_block(const MoeConfig& cfg, int64_t max_tokens,
                                            int64_t seq_len) {
    if (cfg.router == "soft") return std::make_unique<SoftMoeLayer<R>>(cfg, max_tokens, seq_len);
    return std::make_unique<MoeLayer<R>>(cfg, max_tokens);
}

template class MoeBlock<float>;
template class MoeBlock<double>;
template std::unique_ptr<MoeBlock<float>> make_moe_block<float>(const MoeConfig&, int64_t, int64_t);
template std::unique_ptr<MoeBlock<double>> make_moe_block<double>(const MoeConfig&, int64_t,
                                                                  int64_t);

}  // namespace moe::sparse
