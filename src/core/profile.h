// Phase timing of the real training step. Layers, models and the trainer mark their phases
// with MOE_PROFILE_SCOPE("attention_fwd"); a program that wants the breakdown (build/bench/
// train_lm --profile) installs a PhaseProfile on its thread for the steps it measures.
// Without one, a scope costs a thread-local load and a branch: the marks stay in the
// production code, so the profile times the step users run, not a copy of it.
//
// Attribution is exclusive: a scope opened inside another pauses the outer one, so the
// phases add up to the time spent inside the outermost scopes (nothing is counted twice).
// Scopes must be opened and closed on the thread that installed the profile (the calling
// thread of forward/backward; the OpenMP workers inside a kernel are not seen).
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace moe {

class PhaseProfile {
  public:
    struct Phase {
        std::string name;
        double seconds = 0;
        int64_t calls = 0;
    };
    // Phases in the order they were first entered.
    const std::vector<Phase>& phases() const { return phases_; }
    double seconds(const std::string& name) const;  // 0 if never entered
    double total_seconds() const;
    void clear() {  // zeroes every phase (safe while a scope is open)
        for (Phase& p : phases_) p.seconds = 0, p.calls = 0;
    }

  private:
    friend class ProfileScope;
    using Clock = std::chrono::steady_clock;
    // Index of the phase `name` (a string literal: compared by pointer first).
    int index_of(const char* name);

    std::vector<Phase> phases_;
    std::vector<const char*> keys_;  // the literal each phase was first entered with
    int current_ = -1;               // the innermost open scope's phase, or -1
    Clock::time_point since_;        // when current_ last started counting
};

// Installs `profile` for the calling thread while alive (nullptr: none); restores the
// previous one on destruction.
class ProfileInstall {
  public:
    explicit ProfileInstall(PhaseProfile* profile);
    ~ProfileInstall();
    ProfileInstall(const ProfileInstall&) = delete;
    ProfileInstall& operator=(const ProfileInstall&) = delete;

  private:
    PhaseProfile* previous_;
};

// The calling thread's profile, or nullptr.
PhaseProfile* active_profile();

class ProfileScope {
  public:
    // `phase` must outlive the profile (a string literal).
    explicit ProfileScope(const char* phase) : profile_(active_profile()) {
        if (profile_) enter(phase);
    }
    ~ProfileScope() {
        if (profile_) leave();
    }
    ProfileScope(const ProfileScope&) = delete;
    ProfileScope& operator=(const ProfileScope&) = delete;

  private:
    void enter(const char* phase);
    void leave();

    PhaseProfile* profile_;
    int outer_ = -1;  // the phase this scope paused
};

#define MOE_PROFILE_CONCAT_(a, b) a##b
#define MOE_PROFILE_CONCAT(a, b) MOE_PROFILE_CONCAT_(a, b)
// Times the rest of the enclosing block as `phase` (a string literal).
#define MOE_PROFILE_SCOPE(phase) \
    ::moe::ProfileScope MOE_PROFILE_CONCAT(moe_profile_scope_, __LINE__)(phase)

}  // namespace moe
