#include "core/profile.h"


namespace moe {

namespace {
thread_local PhaseProfile* g_profile = nullptr;
}

PhaseProfile* active_profile() { return g_profile; }

ProfileInstall::ProfileInstall(PhaseProfile* profile) : previous_(g_profile) {
    g_profile = profile;
}

ProfileInstall::~ProfileInstall() { g_profile = previous_; }

double PhaseProfile::seconds(const std::string& name) const {
    for (const Phase& p : phases_)
        if (p.name == name) return p.seconds;
    return 0;
}

double PhaseProfile::total_seconds() const {
    double s = 0;
    for (const Phase& p : phases_) s += p.seconds;
    return s;
}

int PhaseProfile::index_of(const char* name) {
    // About 20 phases: a linear scan by pointer is cheaper than hashing the name.
    for (size_t i = 0; i < keys_.size(); ++i)
        if (keys_[i] == name) return int(i);
    for (size_t i = 0; i < phases_.size(); ++i)  // the same name from another literal
        if (phases_[i].name == name) return int(i);
    phases_.push_back({name, 0, 0});
    keys_.push_back(name);
    return int(phases_.size() - 1);
}

void ProfileScope::enter(const char* phase) {
    PhaseProfile& p = *profile_;
    const auto now = PhaseProfile::Clock::now();
    if (p.current_ >= 0)
        p.phases_[size_t(p.current_)].seconds +=
            std::chrono::duration<double>(now - p.since_).count();
    outer_ = p.current_;
    p.current_ = p.index_of(phase);
    ++p.phases_[size_t(p.current_)].calls;
    p.since_ = now;
}

void ProfileScope::leave() {
    PhaseProfile& p = *profile_;
    const auto now = PhaseProfile::Clock::now();
    if (p.current_ < 0) return;  // cleared while open: nothing to charge (and no throw here)
    p.phases_[size_t(p.current_)].seconds += std::chrono::duration<double>(now - p.since_).count();
    p.current_ = outer_;
    p.since_ = now;
}

}  // namespace moe
