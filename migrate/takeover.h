// Live upgrade: a new ferryd (`ferryd --takeover PATH`) takes over from the running one.
//   new -> old  "FERRY-TAKEOVER 2\n" (a successor that adopts connections; "1": one that does
//               not, and what a successor says again to a predecessor that closed on "2")
//   old         pauses its workers; sends the whole switch's migration stream, then its control
//               socket's listening fd (SCM_RIGHTS), so clients never find the path missing
//   new -> old  "RELEASE\n" once it has both (or "ABORT ...\n": the old one resumes as it was)
//   old         writes the stream to PATH.checkpoint, stops its workers, closes its ports
//               (vhost-user sockets, devices) -> "RELEASED\n"; after hello 2 also
//               "CONNECTIONS n\n" and n connections of its ports, each one message with its
//               descriptors (SCM_RIGHTS): their peers never see them close
//   new         creates its switch (its ports at the same paths, adopting the connections
//               handed over; other vhost-user peers reconnect),
//               installs the state, serves the control socket, starts its workers
//   new -> old  "DONE\n" -> the old one exits; or "FAILED ...\n", or the connection closes
//               (the new one died): once the new process is gone the old one reopens its
//               ports and goes on with its tables as they were (if the ports cannot be
//               reopened it exits, saying to start ferryd with --restore PATH.checkpoint)
// The running ferryd listens at `<control socket>.takeover` (mode 0600, same user only) and
// runs all of this from its control loop, which goes on meanwhile (housekeeping, the watchdog;
// control requests wait from the hello to the outcome). Every wait is bounded: a connection's
// hello 5 s (at most 4 wait at once), RELEASE a few seconds plus the stream's size at a
// successor's slowest expected pace (then the workers resume and a late RELEASE finds the
// connection closed), DONE 120 s, a failed successor's exit 10 s. One hand-over at a time. Both
// sides see their switch through a MigrationHost (migrate/host.h) and the rest of ferryd (its
// control socket, its ports, the service manager) through a TakeoverHost.
#pragma once

#include <sys/types.h>

#include <chrono>
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

/// A connection of a port, handed from the running ferryd to its successor with its
/// descriptors (vhost-user: control/vhost_handover.h). Owns fds until they are sent or closed.
struct HandedConnection {
    std::string path;           // the port's socket
    std::vector<uint8_t> meta;  // what the port needs to adopt it, in its own layout
    std::vector<int> fds;
};

/// What the running ferryd's side of a hand-over needs besides its switch's state: the control
/// loop, the control socket, the ports, the exit, the service manager. control/ implements it.
/// Context: control.
class TakeoverHost {
public:
    virtual ~TakeoverHost() = default;
    /// Calls on_ready from the control loop whenever fd is readable (writable: writable), or
    /// hung up, until unwatch(fd). Watching fd again replaces both.
    virtual void watch(int fd, bool writable, std::function<void()> on_ready) = 0;
    virtual void unwatch(int fd) = 0;
    /// Holds the control socket's clients (hold true): no new one is accepted and no request
    /// read (they wait in the socket's queues) until hold false; the control loop goes on.
    virtual void hold_control_requests(bool hold) = 0;
    /// The listening control socket, sent to the successor (SCM_RIGHTS).
    virtual int control_socket_fd() const = 0;
    /// The control socket is the successor's now: stop serving it, leave its path alone.
    virtual void control_socket_handed_over() = 0;
    /// Stops the workers and closes every port (the successor opens them next); the tables
    /// stay. handed: null when the successor adopts no connection; otherwise the ports'
    /// connections that can be handed over are added to it (the caller sends or closes them),
    /// and their ports close without their peers noticing.
    virtual void release_ports(std::vector<HandedConnection>* handed) = 0;
    /// Reopens the released ports, each in its slot, and starts the workers.
    /// @return kFailed / kConflict naming the port
    virtual Status reclaim_ports() = 0;
    /// Ends this ferryd's event loop (it exits).
    virtual void request_shutdown() = 0;
    /// Tells the service manager (sd_notify(3) state); nothing without one.
    virtual void notify_service_manager(const std::string& state) = 0;
};

/// The running ferryd's side: a state machine the control loop drives (on_readable, the
/// connection's readiness through TakeoverHost::watch, check_deadlines), so that no peer
/// holds the control thread: it goes on serving requests (except during a hand-over, which
/// holds them), housekeeping and pinging the watchdog. Never blocks. Context: control thread.
class TakeoverListener {
public:
    static Result<std::unique_ptr<TakeoverListener>> listen(const std::string& path,
                                                            MigrationHost& host,
                                                            TakeoverHost& ferryd);
    /// stop(), then closes and removes the socket.
    ~TakeoverListener();
    TakeoverListener(const TakeoverListener&) = delete;
    TakeoverListener& operator=(const TakeoverListener&) = delete;
    int fd() const { return fd_; }
    /// Accepts the connections waiting on the socket; a hand-over begins once one of them
    /// said its hello. Context: control.
    void on_readable();
    /// Ends the waits whose deadline passed (a hello, RELEASE, DONE, the successor's exit).
    /// Call it from the control loop at least every 100 ms. Context: control.
    void check_deadlines();
    /// Ends a hand-over under way as if its successor went away (before RELEASE: the workers
    /// resume), closes every connection and accepts no more. Context: control.
    void stop();
    /// Whether a hand-over is under way (from a successor's hello to its outcome). Context:
    /// control.
    bool busy() const { return step_ != Step::kIdle; }

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
    using Clock = std::chrono::steady_clock;

    /// Where a hand-over is. One at a time: in any step but kIdle a new connection is closed
    /// at once, saying so.
    enum class Step : uint8_t {
        kIdle,          // none: connections may say their hello (kHelloWait each). Workers run.
        kSending,       // a successor said hello: the workers are paused and control requests
                        // held; the stream, then the control socket, go out as the connection
                        // takes them. Ends at the RELEASE deadline.
        kAwaitRelease,  // all sent: RELEASE releases the ports, anything else (ABORT, the
                        // close, the deadline) resumes the workers. Workers paused, requests
                        // held.
        kAwaitDone,     // ports released: DONE hands over (this ferryd exits), anything else
                        // or kDoneWait means the successor failed. Requests held.
        kAwaitExit,     // the successor failed: once its process is gone (kExitWait) the
                        // ports are reclaimed. Requests held.
    };
    /// A connection that has not said its whole hello yet.
    struct Waiting {
        int fd = -1;
        pid_t pid = 0;
        Clock::time_point deadline;
        size_t said = 0;   // bytes of the hello received so far
        char version = 0;  // the hello's version digit, once received
    };

    TakeoverListener(std::string path, MigrationHost& host, TakeoverHost& ferryd)
        : path_(std::move(path)), host_(host), ferryd_(ferryd) {}
    /// Reads what a waiting connection said of its hello; begins the hand-over once whole.
    void on_hello(int fd);
    /// Closes a waiting connection, logging why.
    void drop_waiting(size_t i, const char* why);
    /// Pauses the workers, captures the switch and starts sending it to the successor on
    /// conn (process id pid).
    void begin(int conn, pid_t pid, char version);
    /// The successor's connection is ready: sends, or reads its word, as the step says.
    void on_connection();
    /// Sends what the connection takes of the stream, then the control socket. @return
    /// false when the successor went away (the hand-over has ended)
    bool send_some();
    /// Reads the successor's next line into word_. @return true once a line is whole;
    /// false while it is not, or when the hand-over ended (the successor went away)
    bool read_word();
    /// Before RELEASE: the hand-over ends, the workers resume; logs why and what this ferryd
    /// does then.
    void give_up(const std::string& why, const char* then = "going on");
    /// RELEASE: writes the checkpoint, releases the ports, says RELEASED.
    void release();
    /// After RELEASE: DONE. This ferryd exits.
    void handed_over();
    /// After RELEASE: the successor failed; the ports come back once its process is gone.
    void successor_failed(const std::string& why);
    /// Reopens the ports (or, when that cannot be, exits naming the checkpoint).
    void reclaim(const Status& gone);
    /// Closes the successor's connection and lets control requests through again.
    void close_connection();

    std::string path_;
    MigrationHost& host_;
    TakeoverHost& ferryd_;
    int fd_ = -1;
    uint64_t inode_ = 0;
    bool stopped_ = false;
    Clock::time_point accept_paused_until_{};  // after EMFILE & co., so the loop does not spin
    std::vector<Waiting> waiting_;
    Step step_ = Step::kIdle;
    int conn_ = -1;
    std::unique_ptr<ScopedPause> paused_;  // kSending, kAwaitRelease
    Clock::time_point paused_at_{};
    Clock::time_point deadline_{};  // of the current step
    std::vector<uint8_t> stream_;   // until the checkpoint is written
    size_t sent_ = 0;               // bytes of stream_ sent
    bool fd_sent_ = false;
    std::string word_;  // the successor's current line
    size_t connections_ = 0;
    bool adopts_ = false;     // the successor said hello 2: it adopts its ports' connections
    std::string failed_why_;  // kAwaitExit: how the successor failed
    Outcome outcome_ = Outcome::kNone;
    pid_t successor_pid_ = 0;
};

/// The new ferryd's side of a hand-over.
struct Takeover {
    int conn = -1;
    int control_fd = -1;        // the predecessor's listening control socket
    MigrationState state;       // its whole switch, read and checked
    pid_t predecessor_pid = 0;  // from SO_PEERCRED: whom this process replaces
    bool adopts = false;        // it took hello 2: it hands its ports' connections over
    std::vector<HandedConnection> connections;  // those connections, for the new ports
    std::string connections_error;              // why some did not arrive (they close)
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
