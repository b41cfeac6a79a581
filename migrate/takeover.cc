#include "migrate/takeover.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "migrate/file_transport.h"
#include "migrate/stages.h"
#include "migrate/stream_reader.h"
#include "migrate/stream_writer.h"
#include "migrate/transport.h"

namespace ferry {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kHello = "FERRY-TAKEOVER 1\n";

Deadline in_seconds(double s) {
    return Clock::now() + std::chrono::microseconds(static_cast<int64_t>(s * 1e6));
}

/// Reads one line (without its newline), at most 512 bytes. @return kFailed on EOF/timeout
Result<std::string> read_line(int fd, Deadline deadline) {
    std::string line;
    uint8_t c = 0;
    while (line.size() < 512) {
        // One byte at a time: the protocol's lines are few and short, and nothing after a
        // line may be consumed (a stream or an fd may follow).
        pollfd p{fd, POLLIN, 0};
        const int left = static_cast<int>(std::max<int64_t>(
            0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())
                   .count()));
        if (::poll(&p, 1, left) <= 0)
            return make_error(ErrorCode::kFailed, "takeover: no answer in time");
        const ssize_t r = ::recv(fd, &c, 1, 0);
        if (r <= 0) return make_error(ErrorCode::kFailed, "takeover: the peer went away");
        if (c == '\n') return line;
        line.push_back(static_cast<char>(c));
    }
    return make_error(ErrorCode::kFailed, "takeover: line too long");
}

Status send_text(int fd, const std::string& text, Deadline deadline) {
    return transport_send(fd, reinterpret_cast<const uint8_t*>(text.data()), text.size(), deadline);
}

/// A one-byte message ('F') with room for one descriptor in its control data.
struct FdMessage {
    char byte = 'F';
    iovec iov{};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    FdMessage() {
        iov = iovec{&byte, 1};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
    }
    FdMessage(const FdMessage&) = delete;
    FdMessage& operator=(const FdMessage&) = delete;
};

Status send_fd(int conn, int fd) {
    FdMessage m;
    cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
    if (::sendmsg(conn, &m.msg, MSG_NOSIGNAL) != 1)
        return make_error(ErrorCode::kFailed, std::string("takeover: sendmsg: ") + strerror(errno));
    return Ok{};
}

Result<int> recv_fd(int conn, Deadline deadline) {
    pollfd p{conn, POLLIN, 0};
    const int left = static_cast<int>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count()));
    if (::poll(&p, 1, left) <= 0)
        return make_error(ErrorCode::kFailed, "takeover: no control socket in time");
    FdMessage m;
    m.byte = 0;
    if (::recvmsg(conn, &m.msg, MSG_CMSG_CLOEXEC) != 1 || m.byte != 'F')
        return make_error(ErrorCode::kFailed, "takeover: no control socket from the predecessor");
    cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
    if (c == nullptr || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        return make_error(ErrorCode::kFailed, "takeover: no control socket from the predecessor");
    int fd = -1;
    std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
}

/// Waits until process pid is gone (exited; a zombie holds nothing), at most `wait`.
/// @return whether it is gone
bool wait_gone(pid_t pid, std::chrono::milliseconds wait) {
    const auto until = Clock::now() + wait;
    for (;;) {
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string line;
        if (!stat || !std::getline(stat, line)) return true;
        const size_t paren = line.rfind(')');  // the state follows the command's name
        if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z')
            return true;
        if (Clock::now() >= until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

}  // namespace

Result<std::unique_ptr<TakeoverListener>> TakeoverListener::listen(const std::string& path,
                                                                   MigrationHost& host,
                                                                   TakeoverHost& ferryd) {
    std::unique_ptr<TakeoverListener> l(new TakeoverListener(path, host, ferryd));
    auto fd = transport_listen("unix:" + path);
    if (!fd) return fd.error();
    l->fd_ = *fd;
    ::chmod(path.c_str(), 0600);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) l->inode_ = st.st_ino;
    return l;
}

TakeoverListener::~TakeoverListener() {
    if (fd_ >= 0) ::close(fd_);
    // Only our own socket: a successor may have bound the path already.
    struct stat st {};
    if (inode_ != 0 && ::lstat(path_.c_str(), &st) == 0 && st.st_ino == inode_)
        ::unlink(path_.c_str());
}

void TakeoverListener::on_readable() {
    auto conn = transport_accept(fd_, in_seconds(1));
    if (!conn) return;
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(*conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != ::getuid() && cred.uid != 0)) {
        host_.log(MigrateLog::kWarn, "takeover: refused a connection from uid %u", cred.uid);
        ::close(*conn);
        return;
    }
    host_.log(MigrateLog::kInfo, "takeover: ferryd pid %d asks to take over",
              static_cast<int>(cred.pid));
    successor_pid_ = cred.pid;
    if (Status s = hand_over(*conn, cred.pid); !s)
        host_.log(MigrateLog::kWarn, "%s", s.error().message.c_str());
    ::close(*conn);
}

Status TakeoverListener::hand_over(int conn, pid_t successor) {
    auto hello = read_line(conn, in_seconds(5));
    if (!hello || *hello + "\n" != kHello)
        return make_error(ErrorCode::kFailed, "takeover: not a ferryd asking to take over");
    const auto paused_at = Clock::now();
    ScopedPause paused(host_.workers());
    if (!paused) return paused.status().error();
    auto state = MigrationControl(host_).capture(std::nullopt);
    if (!state) return state.error();
    const std::vector<uint8_t> stream = write_stream(*state);
    const Deadline deadline = in_seconds(60);
    Status sent = transport_send(conn, stream.data(), stream.size(), deadline);
    if (sent) sent = send_fd(conn, ferryd_.control_socket_fd());
    auto reply = sent ? read_line(conn, deadline) : Result<std::string>(sent.error());
    if (!reply || *reply != "RELEASE") {
        // ABORT: the successor found it cannot take this state; nothing changed here, and
        // the workers resume as this returns.
        return make_error(ErrorCode::kFailed, "takeover: the successor gave up (" +
                                                  (reply ? *reply : reply.error().message) +
                                                  "); going on");
    }
    // The point of no return: the successor has the state and the control socket.
    const std::string checkpoint = path_ + ".checkpoint";
    if (Status w = write_file_atomic(checkpoint, stream); !w)
        host_.log(MigrateLog::kWarn, "takeover: %s", w.error().message.c_str());
    paused.release();  // release_ports() stops the workers, which must not be parked then
    ferryd_.release_ports();
    send_text(conn, "RELEASED\n", deadline);
    // The guest-visible part of an upgrade starts at the pause: how much of it was here.
    host_.log(MigrateLog::kInfo, "takeover: ports released, %.1f ms after the workers paused",
              std::chrono::duration<double, std::milli>(Clock::now() - paused_at).count());
    auto done = read_line(conn, in_seconds(120));
    if (done && *done == "DONE") {
        ferryd_.control_socket_handed_over();  // the socket is the successor's now
        ferryd_.request_shutdown();
        outcome_ = Outcome::kHandedOver;
        host_.log(MigrateLog::kInfo,
                  "takeover: the successor runs; %zu connections handed over, exiting",
                  state->connections.size());
        ::unlink(checkpoint.c_str());
        return Ok{};
    }
    // The successor failed or died before it ran: this ferryd still holds every table and
    // the control socket, so it takes its ports back (once the successor's process, which
    // may hold them, is gone) and goes on where it stopped.
    const std::string why = done ? *done : done.error().message;
    Status back = wait_gone(successor, std::chrono::seconds(10))
                      ? ferryd_.reclaim_ports()
                      : Status(make_error(ErrorCode::kFailed, "the successor did not exit"));
    if (back) {
        ::unlink(checkpoint.c_str());
        // The successor may have named itself the unit's main process before it failed.
        ferryd_.notify_service_manager("MAINPID=" + std::to_string(::getpid()) +
                                       "\nSTATUS=the successor failed; ports reopened, forwarding");
        return make_error(ErrorCode::kFailed, "takeover: the successor failed (" + why +
                                                  "); ports reopened, going "
                                                  "on with " +
                                                  std::to_string(state->connections.size()) +
                                                  " connections");
    }
    ferryd_.control_socket_handed_over();
    ferryd_.request_shutdown();
    outcome_ = Outcome::kSuccessorFailed;
    return make_error(ErrorCode::kFailed,
                      "takeover: the successor failed (" + why +
                          "), and the ports cannot be reopened here (" + back.error().message +
                          "); exiting: start ferryd with --restore " + checkpoint);
}

namespace {

/// Connects to path and receives the stream and the control socket. @return the hand-over,
/// its stream, or why not (the predecessor then goes on)
Result<Takeover> takeover_begin(const std::string& path, double timeout_s,
                                std::vector<uint8_t>* stream_out) {
    const Deadline deadline = in_seconds(timeout_s);
    auto conn = transport_connect("unix:" + path, deadline);
    if (!conn) return conn.error();
    Takeover t;
    t.conn = *conn;
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(t.conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
        t.predecessor_pid = cred.pid;
    auto fail = [&](const Error& e) -> Result<Takeover> {
        send_text(t.conn, "ABORT\n", in_seconds(1));
        ::close(t.conn);
        if (t.control_fd >= 0) ::close(t.control_fd);
        return e;
    };
    if (Status s = send_text(t.conn, kHello, deadline); !s) return fail(s.error());
    auto stream = transport_read_stream(t.conn, deadline, kMaxStreamBytes);
    if (!stream) return fail(stream.error());
    *stream_out = std::move(*stream);
    auto fd = recv_fd(t.conn, deadline);
    if (!fd) return fail(fd.error());
    t.control_fd = *fd;
    return t;
}

/// Has the predecessor release its ports: from here on it will exit whatever happens.
Status takeover_release(Takeover& t) {
    const Deadline deadline = in_seconds(60);
    if (Status s = send_text(t.conn, "RELEASE\n", deadline); !s) return s;
    auto released = read_line(t.conn, deadline);
    if (!released || *released != "RELEASED")
        return make_error(ErrorCode::kFailed,
                          "takeover: the predecessor did not release its "
                          "ports");
    return Ok{};
}

/// Gives up before the release: the predecessor goes on as it was.
void takeover_abort(Takeover& t, const std::string& why) {
    if (t.conn < 0) return;
    send_text(t.conn, "ABORT " + why + "\n", in_seconds(1));
    ::close(t.conn);
    t.conn = -1;
    if (t.control_fd >= 0) ::close(t.control_fd);
    t.control_fd = -1;
}

}  // namespace

Result<Takeover> take_over(const std::string& path, const std::vector<std::string>& ports,
                           double timeout_s, const std::function<void(pid_t)>& connected) {
    std::vector<uint8_t> stream;
    auto t = takeover_begin(path, timeout_s, &stream);
    if (!t) return t.error();
    if (connected) connected(t->predecessor_pid);
    // Before the point of no return: the stream must read and its ports exist here.
    auto state = read_stream(stream.data(), stream.size());
    std::string why = state ? "" : state.error().message;
    for (size_t i = 0; state && why.empty() && i < state->ports.size(); ++i) {
        const std::string& name = state->ports[i].name;
        if (std::find(ports.begin(), ports.end(), name) == ports.end())
            why = "the running switch's port " + name + " is not in this configuration";
    }
    if (!why.empty()) {
        takeover_abort(*t, why);
        return make_error(ErrorCode::kInvalidParams, why + "; the running ferryd goes on");
    }
    if (Status r = takeover_release(*t); !r) return r.error();
    t->state = std::move(*state);
    return t;
}

Result<InstallReport> takeover_install(const Takeover& t, MigrationHost& host) {
    return MigrationControl(host).install(t.state);
}

void takeover_end(Takeover& t, bool ok, const std::string& why) {
    if (t.conn < 0) return;
    send_text(t.conn, ok ? "DONE\n" : "FAILED " + why + "\n", in_seconds(5));
    ::close(t.conn);
    t.conn = -1;
}

}  // namespace ferry
