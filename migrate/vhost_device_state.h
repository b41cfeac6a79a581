// vhost-user back-end state transfer (QEMU >= 10, docs/interop/vhost-user.rst, "Migrating
// back-end state"): a front-end that negotiated VHOST_USER_PROTOCOL_F_DEVICE_STATE hands the
// back-end one end of a pipe with VHOST_USER_SET_DEVICE_STATE_FD, after it stopped the device,
// and asks VHOST_USER_CHECK_DEVICE_STATE once it has seen the end of the data. On the source the
// back-end writes its state into the pipe (SAVE); on the destination it reads it (LOAD). QEMU
// carries the bytes inside its own migration stream, so the port's flows move with the guest,
// with nothing else to call.
//
// DeviceStateTransfer is the protocol half for one vhost-user connection: it checks every
// request (payload size, direction, phase, exactly one fd of the right kind), moves the bytes on
// a thread of its own (QEMU drains the pipe only after the reply) and answers CHECK. What the
// bytes are and how they are captured or installed is the switch's business, given as hooks by
// control code. Nothing here knows DPDK: the caller decodes the vhost-user framing.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ferry {

/// Wire values of the vhost-user specification.
inline constexpr unsigned kVhostProtocolFeatureDeviceState = 19;
inline constexpr uint32_t kVhostUserSetDeviceStateFd = 42;
inline constexpr uint32_t kVhostUserCheckDeviceState = 43;
/// SET_DEVICE_STATE_FD's reply: bits 0..7 non-zero on error; bit 8 set when the back-end
/// returns no fd of its own (ferry always uses the front-end's pipe).
inline constexpr uint64_t kDeviceStateNoFd = uint64_t{1} << 8;
inline constexpr uint64_t kDeviceStateError = 1;

enum class DeviceStateDirection : uint32_t { kSave = 0, kLoad = 1 };
/// The only phase the specification defines: both devices stopped, before switch-over.
inline constexpr uint32_t kDeviceStatePhaseStopped = 0;

/// How one transfer ended: for migrate.status and the log.
struct DeviceStateReport {
    DeviceStateDirection direction = DeviceStateDirection::kSave;
    uint64_t bytes = 0;
    size_t connections = 0;
    bool ok = false;
    std::string reason;  // why it failed; empty on success
    double ms = 0;       // from SET_DEVICE_STATE_FD to the CHECK answer
    /// Where the time went: a SAVE's hook steps and `write` (until the front-end had read it
    /// all); a LOAD's `read` (until the front-end closed the pipe), its hook steps and
    /// `install` (at CHECK).
    std::map<std::string, double> steps_ms;
};

/// What a transfer needs from the switch. Every hook runs on the transfer's own thread or on
/// the thread that delivers vhost-user messages, never on a worker; a hook that needs the
/// control thread posts there and waits (bounded). A hook that throws counts as a failure.
struct DeviceStateHooks {
    struct Saved {
        std::vector<uint8_t> bytes;  // the port's scope stream
        size_t connections = 0;
        std::string error;                       // non-empty: nothing to send, the reason
        std::map<std::string, double> steps_ms;  // the hook's own steps, for the report
    };
    struct Loaded {
        std::string error;  // non-empty: the stream is refused, the reason
        size_t connections = 0;
        /// Installs what was validated, all or nothing. @return "" or why nothing changed
        std::function<std::string()> install;
        std::map<std::string, double> steps_ms;  // the hook's own steps, for the report
    };
    /// Captures the port's state (its device is stopped). Context: transfer thread.
    std::function<Saved()> save;
    /// Reads and checks a whole stream; installs nothing. Context: transfer thread.
    std::function<Loaded(std::vector<uint8_t>)> load;
    /// Told once per transfer, after its CHECK answer (or its abandonment). Context: any.
    std::function<void(const DeviceStateReport&)> finished;
};

/// One answer to the front-end.
struct DeviceStateReply {
    bool handled = false;  // false: not a device-state request; fds left to the caller
    uint64_t value = 0;    // the u64 reply payload
};

/// The device-state protocol of one vhost-user connection. Context: the thread that delivers
/// the connection's messages (one at a time); abort() and the destructor from any thread.
class DeviceStateTransfer {
public:
    /// @param max_bytes  the largest stream a LOAD accepts (bounded before it is trusted)
    /// @param io_timeout_ms  how long a transfer may take, and CHECK may wait for it
    DeviceStateTransfer(std::string port, DeviceStateHooks hooks, size_t max_bytes,
                        uint32_t io_timeout_ms = 60000);
    ~DeviceStateTransfer();
    DeviceStateTransfer(const DeviceStateTransfer&) = delete;
    DeviceStateTransfer& operator=(const DeviceStateTransfer&) = delete;

    /// Handles one front-end request. For requests 42 and 43 it owns fds[0..n_fds) from then
    /// on (keeps the one it uses, closes the others); for other requests it touches nothing.
    /// @return handled=false for other requests; else the u64 to reply
    DeviceStateReply handle(uint32_t request, const uint8_t* payload, size_t size, const int* fds,
                            size_t n_fds);

    /// Ends a running transfer as failed (the front-end went away): its thread stops at its
    /// next wake-up and nothing is installed. Context: any.
    void abort();

    /// Whether a transfer is under way (between SET_DEVICE_STATE_FD and its CHECK).
    bool busy() const;

private:
    enum class Stage { kIdle, kRunning, kDone };

    uint64_t start(DeviceStateDirection dir, int fd);
    uint64_t check();
    void run(DeviceStateDirection dir, int fd);
    std::string do_save(int fd);
    std::string do_load(int fd);
    void join_worker();
    void finish(bool ok, std::string reason);

    const std::string port_;
    const DeviceStateHooks hooks_;
    const size_t max_bytes_;
    const uint32_t io_timeout_ms_;

    mutable std::mutex mutex_;  // guards everything below against the transfer thread
    std::condition_variable done_cv_;
    Stage stage_ = Stage::kIdle;
    std::thread worker_;
    std::atomic<bool> cancel_{false};  // read by the transfer thread between I/O slices
    DeviceStateReport report_;
    std::function<std::string()> install_;  // a validated LOAD, run by CHECK
    std::string error_;                     // the transfer thread's verdict
    std::chrono::steady_clock::time_point t0_;
};

}  // namespace ferry
