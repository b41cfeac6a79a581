// The service manager's readiness protocol (sd_notify(3)) without libsystemd: one datagram of
// newline-separated KEY=VALUE lines to the unix socket named by $NOTIFY_SOCKET (an abstract name
// when it begins with '@'). ferryd runs the same without a service manager: when the variable is
// unset every call here does nothing. Context: control thread, except where a function says any.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace ferry {

/// Sends state (e.g. "READY=1\nSTATUS=2 ports") to $NOTIFY_SOCKET. Context: any.
/// @return true when the datagram was sent; false when the variable is unset, malformed or the
/// send failed (never fatal: the daemon works without a service manager)
bool notify_service_manager(const std::string& state);

/// The watchdog interval the service manager asks this process for: $WATCHDOG_USEC, unless
/// $WATCHDOG_PID names another process. Context: any. @return microseconds, 0 when none
uint64_t watchdog_usec_from_env();

/// The interval a live-upgrade successor assumes. The service manager gives WATCHDOG_USEC only
/// to the process it started, not to the reload command that starts a successor, so a successor
/// pings every second: enough for any WatchdogSec= of 2 s or more.
constexpr uint64_t kSuccessorWatchdogUsec = 2'000'000;

/// Parses a WATCHDOG_USEC value. Context: any. @return microseconds, 0 when empty or malformed
uint64_t parse_watchdog_usec(const std::string& text);

/// Sends WATCHDOG=1 at half the interval, as sd_watchdog_enabled(3) recommends. Context: control.
class WatchdogPinger {
public:
    using Clock = std::chrono::steady_clock;
    /// usec 0: never pings.
    explicit WatchdogPinger(uint64_t usec) : period_(std::chrono::microseconds(usec / 2)) {}
    /// Context: any. @return whether tick() ever pings
    bool enabled() const { return period_.count() > 0; }
    /// Pings when half the interval passed since the last ping. Call it from the control loop,
    /// which thereby proves it still runs. @return true when it pinged
    bool tick(Clock::time_point now = Clock::now());

private:
    std::chrono::microseconds period_;
    Clock::time_point last_{};
};

}  // namespace ferry
