// Pausing the workers from the control thread: the interface the switch implements and the one
// RAII type every caller uses. It sits below control/ and migrate/ because both pause the
// workers (the command dispatcher around unsafe commands, the migration drivers around a
// capture or an install); the per-worker handshake itself is dataplane/pause_gate.h.
#pragma once

#include <utility>

#include "dataplane/result.h"

namespace ferry {

/// Stops and restarts the workers around work that may not run beside them. Context: control
/// thread.
class Pauser {
public:
    virtual ~Pauser() = default;
    /// Pauses every worker at a safe point; returns an error (kBusy) if they do not stop in time,
    /// in which case no worker is left paused.
    virtual Status pause() = 0;
    virtual void resume() = 0;
};

/// Pauses the workers for as long as it lives: its destructor (or release()) resumes them when
/// the pause took, so no path out of a scope leaves them parked. Nests as pause()/resume() do
/// (an inner one only counts; the outermost resumes). Context: control thread.
class ScopedPause {
public:
    explicit ScopedPause(Pauser& p) : p_(&p), status_(p.pause()) {
        if (!status_) p_ = nullptr;
    }
    ~ScopedPause() { release(); }
    ScopedPause(const ScopedPause&) = delete;
    ScopedPause& operator=(const ScopedPause&) = delete;

    /// Whether this one holds the workers paused.
    explicit operator bool() const { return p_ != nullptr; }
    /// Why the pause did not take (kBusy: a worker did not stop in time); Ok while held.
    const Status& status() const { return status_; }
    /// Resumes now; later calls and the destructor do nothing.
    void release() {
        if (p_ != nullptr) std::exchange(p_, nullptr)->resume();
    }

private:
    Pauser* p_;
    Status status_;
};

}  // namespace ferry
