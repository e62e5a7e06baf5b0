// Growth and freezing of experts (see growth.h). One-off operations on whole arenas: plain
// loops through doubles, for f32 and f64 parameters alike.
#include "moe/growth.h"

#include <cmath>
#include <cstring>

#include "core/check.h"
#include "core/rng.h"

namespace moe::sparse {

namespace {

double load(const Tensor& t, int64_t i) {
    return t.dtype == DType::f64 ? t.ptr<double>()[i] : double(t.ptr<float>()[i]);
}
void store(const Tensor& t, int64_t i, double v) {
    if (t.dtype == DType::f64)
        t.ptr<double>()[i] = v;
    else
        t.ptr<float>()[i] = float(v);
}

bool starts_with(const std::string& s, const std::string& p) {
    return s.rfind(p, 0) == 0;
}

// A per-expert tensor of the layer at prefix: its slices along dimension 0 are experts.
bool is_per_expert(const std::string& name, const Shape& shape, const std::string& prefix,
                   int64_t E) {
    return (starts_with(name, prefix + "experts.") || starts_with(name, prefix + "router.")) &&
           shape.rank >= 1 && shape[0] == E;
}

}  // namespace

MoeConfig grown_config(const MoeConfig& cfg, int64_t n_new) {
    MOE_REQUIRE(n_new >= 1, "growth: the number of new experts (", n_new, ") must be >= 1");
    MoeConfig c = cfg;
    c.n_experts += n_new;
    return c;
}

void grow_experts(Arena& new_params, const Arena& old_params, const std::string& prefix,
                  int64_t old_E, const GrowthOptions& opt) {
    MOE_CHECK(new_params.allocated() && old_params.allocated(),
              "grow_experts: arenas not allocated");
    MOE_REQUIRE(opt.n_new >= 1, "growth: n_new (", opt.n_new, ") must be >= 1");
    MOE_REQUIRE(opt.copy_from >= -1 && opt.copy_from < old_E, "growth: copy_from (", opt.copy_from,
                ") must be -1 (fresh) or an existing expert in [0, ", old_E, ")");
    const int64_t new_E = old_E + opt.n_new;
    const double out_std = opt.out_std < 0 ? opt.init_std : opt.out_std;
    const Rng base(opt.seed);
    const auto& entries = new_params.entries();
    for (size_t idx = 0; idx < entries.size(); ++idx) {
        const Arena::Entry& ne = entries[idx];
        const Tensor nt = new_params.get(int(idx));
        const int oi = old_params.find(ne.name);
        MOE_CHECK(oi >= 0, "grow_experts: tensor '", ne.name, "' is not in the old parameters");
        const Tensor ot = old_params.get(oi);
        MOE_CHECK(ot.dtype == nt.dtype, "grow_experts: '", ne.name, "' changed dtype");
        if (ot.shape == nt.shape) {
            std::memcpy(nt.data, ot.data, nt.nbytes());
            continue;
        }
        MOE_CHECK(is_per_expert(ne.name, ne.shape, prefix, new_E) && ot.shape[0] == old_E,
                  "grow_experts: '", ne.name, "' changed shape from ", ot.shape.str(), " to ",
                  ne.shape.str(), " but is not a per-expert tensor of '", prefix, "' growing from ",
                  old_E, " to ", new_E, " experts");
        std::memcpy(nt.data, ot.data, ot.nbytes());  // the old experts, unchanged
        const int64_t slice = nt.numel() / new_E;
        const std::string local = ne.name.substr(prefix.size());
        const bool expert_w = starts_with(local, "experts.");
        const bool router_w = local == "router.w", router_b = local == "router.b";
        const bool down = local == "experts.w2";
        Rng rng = base.fork(idx);
        // rms of the source slice scales the copy noise, so it is relative to the weights.
        double rms = 0;
        if (opt.copy_from >= 0) {
            for (int64_t i = 0; i < slice; ++i) {
                const double v = load(ot, opt.copy_from * slice + i);
                rms += v * v;
            }
            rms = std::sqrt(rms / double(slice));
        }
        for (int64_t e = old_E; e < new_E; ++e) {
            for (int64_t i = 0; i < slice; ++i) {
                const int64_t dst = e * slice + i;
                double v;
                if (router_b) {
                    v = opt.router_bias;
                } else if (expert_w) {
                    v = opt.copy_from >= 0 ? load(ot, opt.copy_from * slice + i) +
                                                 opt.noise * rms * double(rng.normal())
                                           : (down ? out_std : opt.init_std) * double(rng.normal());
                } else if (router_w) {
                    v = opt.copy_from >= 0 && opt.copy_router_row
                            ? load(ot, opt.copy_from * slice + i)
                            : opt.init_std * double(rng.normal());
                } else {  // a router's own per-expert tensor
                    v = opt.copy_from >= 0 ? load(ot, opt.copy_from * slice + i) : 0.0;
                }
                store(nt, dst, v);
            }
        }
    }
}

void add_expert_freeze(std::vector<uint8_t>& mask, const Arena& params, const std::string& prefix,
                       int64_t E, const std::vector<int64_t>& frozen) {
    mask.resize(params.f32_count(), 0);
    for (int64_t e : frozen)
        MOE_REQUIRE(e >= 0 && e < E, "freeze: expert ", e, " outside [0, ", E, ")");
    bool found = false;
    for (const Arena::Entry& en : params.entries()) {
        if (!is_per_expert(en.name, en.shape, prefix, E)) continue;
        MOE_CHECK(en.dtype == DType::f32, "expert_freeze_mask: '", en.name,
                  "' is not f32 (AdamW masks f32 elements)");
        found = true;
        const int64_t slice = en.shape.numel() / E;
        const size_t begin = en.offset / sizeof(float);
        for (int64_t e : frozen)
            std::memset(mask.data() + begin + size_t(e * slice), 1, size_t(slice));
    }
    MOE_CHECK(found, "expert_freeze_mask: no per-expert tensor under '", prefix, "' with ", E,
              " experts");
}

std::vector<uint8_t> expert_freeze_mask(const Arena& params, const std::string& prefix, int64_t E,
                                        const std::vector<int64_t>& frozen) {
    std::vector<uint8_t> mask(params.f32_count(), 0);
    add_expert_freeze(mask, params, prefix, E, frozen);
    return mask;
}

}  // namespace moe::sparse
