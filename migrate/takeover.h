// Live upgrade: a new ferryd (`ferryd --takeover PATH`) takes over from the running one.
//   new -> old  "FERRY-TAKEOVER 1\n"
//   old         pauses its workers; sends the whole switch's migration stream, then its control
//               socket's listening fd (SCM_RIGHTS), so clients never find the path missing
//   new -> old  "RELEASE\n" once it has both (or "ABORT ...\n": the old one resumes as it was)
//   old         writes the stream to PATH.checkpoint, stops its workers, closes its ports
//               (vhost-user sockets, devices) -> "RELEASED\n"
//   new         creates its switch (its ports at the same paths: vhost-user peers reconnect),
//               installs the state, serves the control socket, starts its workers
//   new -> old  "DONE\n" -> the old one exits; or "FAILED ...\n", or the connection closes
//               (the new one died): once the new process is gone the old one reopens its
//               ports and goes on with its tables as they were (if the ports cannot be
//               reopened it exits, saying to start ferryd with --restore PATH.checkpoint)
// The running ferryd listens at `<control socket>.takeover` (mode 0600, same user only). Both
// sides see their switch through a MigrationHost (migrate/host.h) and the rest of ferryd (its
// control socket, its ports, the service manager) through a TakeoverHost.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/result.h"
#include "migrate/host.h"
#include "migrate/migration_state.h"
#include "migrate/stages.h"

namespace ferry {

/// What the running ferryd's side of a hand-over needs besides its switch's state: the control
/// socket, the ports, the exit, the service manager. control/ implements it. Context: control.
class TakeoverHost {
public:
    virtual ~TakeoverHost() = default;
    /// The listening control socket, sent to the successor (SCM_RIGHTS).
    virtual int control_socket_fd() const = 0;
    /// The control socket is the successor's now: stop serving it, leave its path alone.
    virtual void control_socket_handed_over() = 0;
    /// Stops the workers and closes every port (the successor opens them next); the tables
    /// stay.
    virtual void release_ports() = 0;
    /// Reopens the released ports, each in its slot, and starts the workers.
    /// @return kFailed / kConflict naming the port
    virtual Status reclaim_ports() = 0;
    /// Ends this ferryd's event loop (it exits).
    virtual void request_shutdown() = 0;
    /// Tells the service manager (sd_notify(3) state); nothing without one.
    virtual void notify_service_manager(const std::string& state) = 0;
};

/// The running ferryd's side. Context: control thread.
class TakeoverListener {
public:
    static Result<std::unique_ptr<TakeoverListener>> listen(const std::string& path,
                                                            MigrationHost& host,
                                                            TakeoverHost& ferryd);
    ~TakeoverListener();
    TakeoverListener(const TakeoverListener&) = delete;
    TakeoverListener& operator=(const TakeoverListener&) = delete;
    int fd() const { return fd_; }
    /// Serves one successor that connected (blocking, with deadlines). Context: control.
    void on_readable();

    /// How the last hand-over ended, for the exit path. Each value says what this ferryd does.
    enum class Outcome {
        kNone,             // no hand-over, or the successor failed and the ports were reopened:
                           // this ferryd serves on
        kHandedOver,       // the successor runs (it said DONE): exit 0, quietly
        kSuccessorFailed,  // released, the successor failed and the ports cannot be reopened
                           // here: exit non-zero, checkpoint kept
    };
    /// Context: control. @return the outcome of the last hand-over
    Outcome outcome() const { return outcome_; }
    /// Context: control. @return the pid of the successor that took or tried to take over, 0
    /// before any
    pid_t successor_pid() const { return successor_pid_; }

private:
    TakeoverListener(std::string path, MigrationHost& host, TakeoverHost& ferryd)
        : path_(std::move(path)), host_(host), ferryd_(ferryd) {}
    /// Hands this switch over to the successor (process id successor) on conn; takes the
    /// ports back when it fails after the release. @return why it did not hand over
    Status hand_over(int conn, pid_t successor);

    std::string path_;
    MigrationHost& host_;
    TakeoverHost& ferryd_;
    int fd_ = -1;
    uint64_t inode_ = 0;
    Outcome outcome_ = Outcome::kNone;
    pid_t successor_pid_ = 0;
};

/// The new ferryd's side of a hand-over.
struct Takeover {
    int conn = -1;
    int control_fd = -1;        // the predecessor's listening control socket
    MigrationState state;       // its whole switch, read and checked
    pid_t predecessor_pid = 0;  // from SO_PEERCRED: whom this process replaces
};

/// The successor's side up to the point of no return, before its switch exists: connects to
/// path, receives the running switch's stream and control socket (connected(pid) runs once
/// the predecessor is known), reads the stream and checks that each of its ports is one of
/// `ports` (this configuration's), then has the predecessor release its ports. Before the
/// release every failure says ABORT, and the predecessor goes on as it was; from the release
/// on, it exits whatever happens (takeover_end says how). Context: control.
/// @return the hand-over, or kInvalidParams (the state does not fit this configuration) /
///         kFailed, each saying why
Result<Takeover> take_over(const std::string& path, const std::vector<std::string>& ports,
                           double timeout_s, const std::function<void(pid_t)>& connected);
/// Installs the predecessor's state into the successor's switch (all or nothing), once the
/// switch exists and before its workers start. Context: control. @return as
/// MigrationControl::install
Result<InstallReport> takeover_install(const Takeover& t, MigrationHost& host);
/// Tells the predecessor how it ended (ok: it exits; not ok: it exits, naming its checkpoint).
void takeover_end(Takeover& t, bool ok, const std::string& why);

}  // namespace ferry
