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
// The running ferryd listens at `<control socket>.takeover` (mode 0600, same user only).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/result.h"

namespace ferry {

class Switch;
class ControlServer;

/// The running ferryd's side. Context: control thread.
class TakeoverListener {
public:
    static Result<std::unique_ptr<TakeoverListener>> listen(const std::string& path, Switch& sw,
                                                            ControlServer& server);
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
    TakeoverListener(std::string path, Switch& sw, ControlServer& server)
        : path_(std::move(path)), sw_(sw), server_(server) {}
    /// Hands this switch over to the successor (process id successor) on conn; takes the
    /// ports back when it fails after the release. @return why it did not hand over
    Status hand_over(int conn, pid_t successor);

    std::string path_;
    Switch& sw_;
    ControlServer& server_;
    int fd_ = -1;
    uint64_t inode_ = 0;
    Outcome outcome_ = Outcome::kNone;
    pid_t successor_pid_ = 0;
};

/// The new ferryd's side, before its switch exists.
struct Takeover {
    int conn = -1;
    int control_fd = -1;          // the predecessor's listening control socket
    std::vector<uint8_t> stream;  // its whole switch
    pid_t predecessor_pid = 0;    // from SO_PEERCRED: whom this process replaces
};
/// Connects to path and receives the stream and the control socket. @return the hand-over,
/// or why not (the predecessor then goes on)
Result<Takeover> takeover_begin(const std::string& path, double timeout_s);
/// Has the predecessor release its ports: from here on it will exit whatever happens.
Status takeover_release(Takeover& t);
/// Gives up before the release: the predecessor goes on as it was.
void takeover_abort(Takeover& t, const std::string& why);
/// Tells the predecessor how it ended (ok: it exits; not ok: it exits, naming its checkpoint).
void takeover_end(Takeover& t, bool ok, const std::string& why);

}  // namespace ferry
