#include "migrate/takeover.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "migrate/fd_message.h"
#include "migrate/file_transport.h"
#include "migrate/stages.h"
#include "migrate/stream_reader.h"
#include "migrate/stream_writer.h"
#include "migrate/transport.h"
#include "migrate/wire.h"

namespace ferry {
namespace {

using Clock = std::chrono::steady_clock;

/// A successor's hello: "FERRY-TAKEOVER 1\n" (it takes the state), "... 2\n" (and adopts its
/// ports' connections; a predecessor that only knows 1 closes the connection on it).
constexpr const char* kHello = "FERRY-TAKEOVER 1\n";
constexpr size_t kHelloVersionAt = 15;  // where the version digit is
std::string hello(char version) {
    std::string h = kHello;
    h[kHelloVersionAt] = version;
    return h;
}

Deadline in_seconds(double s) {
    return Clock::now() + std::chrono::microseconds(static_cast<int64_t>(s * 1e6));
}

/// Milliseconds until the deadline, for poll(2): 0 once it passed.
int poll_left(Deadline deadline) {
    return static_cast<int>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count()));
}

/// Reads one line (without its newline), at most 512 bytes. @return kFailed on EOF/timeout
Result<std::string> read_line(int fd, Deadline deadline) {
    std::string line;
    uint8_t c = 0;
    while (line.size() < 512) {
        // One byte at a time: the protocol's lines are few and short, and nothing after a
        // line may be consumed (a stream or an fd may follow).
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, poll_left(deadline)) <= 0)
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

/// Sends fd over conn without waiting, as a one-byte message ('F'). @return kBusy when conn is
/// full (try again once it is writable), kFailed when it broke
Status send_fd(int conn, int fd) {
    const char byte = 'F';
    if (send_with_fds(conn, &byte, 1, &fd, 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) {
        const int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
            return make_error(ErrorCode::kBusy, "takeover: the connection is full");
        return make_error(ErrorCode::kFailed, std::string("takeover: sendmsg: ") + strerror(err));
    }
    return Ok{};
}

Result<int> recv_fd(int conn, Deadline deadline) {
    pollfd p{conn, POLLIN, 0};
    if (::poll(&p, 1, poll_left(deadline)) <= 0)
        return make_error(ErrorCode::kFailed, "takeover: no control socket in time");
    char byte = 0;
    std::vector<int> fds;
    bool truncated = false;
    const ssize_t r = recv_with_fds(conn, &byte, 1, &fds, 1, 0, &truncated);
    if (r != 1 || byte != 'F' || fds.size() != 1 || truncated) {
        for (int fd : fds) ::close(fd);
        return make_error(ErrorCode::kFailed, "takeover: no control socket from the predecessor");
    }
    return fds[0];
}

// A handed connection's message: u32 path length, u32 meta length, u32 descriptor count (big
// endian), the path, the meta; its descriptors in the control data.
constexpr size_t kHandedHead = 12;
constexpr size_t kMaxHandedFds = 250;  // below SCM_MAX_FD (253)
constexpr size_t kMaxHandedMeta = 16384;
constexpr size_t kMaxHandedPath = 4096;
constexpr size_t kMaxHandedConnections = 256;

/// Sends one handed connection (a blocking wait on a full connection, up to the deadline).
Status send_handed(int conn, const HandedConnection& h, Deadline deadline) {
    if (h.fds.empty() || h.fds.size() > kMaxHandedFds || h.meta.size() > kMaxHandedMeta ||
        h.path.size() > kMaxHandedPath)
        return make_error(ErrorCode::kFailed, "takeover: a connection too large to hand over");
    std::vector<uint8_t> data;
    WireWriter w(data);
    w.u32(static_cast<uint32_t>(h.path.size()));
    w.u32(static_cast<uint32_t>(h.meta.size()));
    w.u32(static_cast<uint32_t>(h.fds.size()));
    w.bytes(reinterpret_cast<const uint8_t*>(h.path.data()), h.path.size());
    w.bytes(h.meta.data(), h.meta.size());
    for (;;) {
        const ssize_t sent = send_with_fds(conn, data.data(), data.size(), h.fds.data(),
                                           h.fds.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent >= 0) {
            // The descriptors went with the first byte; the rest is plain data.
            const size_t n = static_cast<size_t>(sent);
            if (n == data.size()) return Ok{};
            return transport_send(conn, data.data() + n, data.size() - n, deadline);
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return make_error(ErrorCode::kFailed,
                              std::string("takeover: sendmsg: ") + strerror(errno));
        pollfd p{conn, POLLOUT, 0};
        if (::poll(&p, 1, poll_left(deadline)) <= 0)
            return make_error(ErrorCode::kFailed, "takeover: the successor takes nothing");
    }
}

/// Reads exactly n bytes. @return kFailed on EOF or at the deadline
Status read_exact(int conn, uint8_t* dst, size_t n, Deadline deadline) {
    auto ch = plain_channel(conn);
    for (size_t got = 0; got < n;) {
        auto r = ch->read_some(dst + got, n - got, deadline);
        if (!r) return r.error();
        if (*r == 0) return make_error(ErrorCode::kFailed, "takeover: the predecessor went away");
        got += *r;
    }
    return Ok{};
}

/// Receives one handed connection, checking its sizes and descriptors.
Result<HandedConnection> recv_handed(int conn, Deadline deadline) {
    HandedConnection h;
    uint8_t head[kHandedHead] = {};
    pollfd p{conn, POLLIN, 0};
    if (::poll(&p, 1, poll_left(deadline)) <= 0)
        return make_error(ErrorCode::kFailed, "takeover: no connection in time");
    // The descriptors come with the first bytes: read just the head, nothing after it.
    bool truncated = false;
    const ssize_t r =
        recv_with_fds(conn, head, sizeof(head), &h.fds, kMaxHandedFds, MSG_WAITALL, &truncated);
    auto fail = [&](const char* why) -> Result<HandedConnection> {
        for (int fd : h.fds) ::close(fd);
        return make_error(ErrorCode::kFailed, std::string("takeover: a handed connection: ") + why);
    };
    if (r != static_cast<ssize_t>(sizeof(head))) return fail("cut short");
    if (truncated) return fail("too many descriptors");
    WireReader in(head, sizeof(head));
    const uint32_t path_len = in.u32();
    const uint32_t meta_len = in.u32();
    const uint32_t n_fds = in.u32();
    if (path_len == 0 || path_len > kMaxHandedPath || meta_len > kMaxHandedMeta ||
        n_fds != h.fds.size() || h.fds.empty())
        return fail("bad sizes");
    std::vector<uint8_t> rest(size_t{path_len} + meta_len);
    if (Status s = read_exact(conn, rest.data(), rest.size(), deadline); !s)
        return fail("cut short");
    h.path.assign(rest.begin(), rest.begin() + path_len);
    h.meta.assign(rest.begin() + path_len, rest.end());
    return h;
}

/// Whether process pid is gone (exited; a zombie holds nothing). Context: any.
bool process_gone(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!stat || !std::getline(stat, line)) return true;
    const size_t paren = line.rfind(')');  // the state follows the command's name
    return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

/// How long a connection may take to say its hello: a successor says it as it connects.
constexpr auto kHelloWait = std::chrono::seconds(5);
/// Connections waiting for their hello at once; one more closes the oldest, so that silent
/// clients cannot keep a successor out.
constexpr size_t kMaxWaiting = 4;
/// How long the workers stay paused for a successor's RELEASE, counted from the pause: this
/// side's capture, the stream's sending, the successor's reading and checking of it. It grows
/// with the stream: kReleaseWaitBase plus the stream's bytes at kSuccessorBytesPerSecond.
/// benchmarks/takeover_release measured 27.5-34.7 s from the pause to RELEASE at 1,000,000
/// connections (208 MB: 6.0 MB/s at the slowest) and 63-108 ms at 10,000, on a 2-core host
/// at load 17, shared with other builds and busy-polling tests (6.1-8.8 s at load 13;
/// docs/migration.md, "Live upgrade"; 0.66-0.82 s on a quiet host since the stream's reader
/// indexes without a node per connection). Half that slowest pace, and a base for a small stream's
/// successor descheduled for seconds, leave room for a busier host: 10,000 connections 5.7 s,
/// 100,000 12 s, 1,000,000 74 s. Past it the workers resume and a late RELEASE finds the connection
/// closed, so a stalled successor cannot stop the forwarding for longer, and only one ferryd ever
/// owns the ports.
constexpr auto kReleaseWaitBase = std::chrono::seconds(5);
constexpr double kSuccessorBytesPerSecond = 3e6;
/// How long the successor may take, after the release, to create its switch and say DONE.
constexpr auto kDoneWait = std::chrono::seconds(120);
/// How long a failed successor's process may take to exit (and free the ports).
constexpr auto kExitWait = std::chrono::seconds(10);
/// The longest line of the successor's ("RELEASE", "DONE", "ABORT why", "FAILED why").
constexpr size_t kMaxWord = 512;
constexpr auto kAcceptPause = std::chrono::milliseconds(100);

Clock::duration release_wait(size_t stream_bytes) {
    return kReleaseWaitBase +
           std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
               static_cast<double>(stream_bytes) / kSuccessorBytesPerSecond));
}

double seconds(Clock::duration d) {
    return std::chrono::duration<double>(d).count();
}

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

Result<std::unique_ptr<TakeoverListener>> TakeoverListener::listen(const std::string& path,
                                                                   MigrationHost& host,
                                                                   TakeoverHost& ferryd) {
    std::unique_ptr<TakeoverListener> l(new TakeoverListener(path, host, ferryd));
    auto fd = transport_listen("unix:" + path);
    if (!fd) return fd.error();
    l->fd_ = *fd;
    // Accepted from the control loop: a connection gone between the wake-up and the accept
    // must not block it.
    const int flags = ::fcntl(l->fd_, F_GETFL);
    if (flags < 0 || ::fcntl(l->fd_, F_SETFL, flags | O_NONBLOCK) != 0)
        return make_error(ErrorCode::kFailed,
                          std::string("takeover socket: fcntl: ") + strerror(errno));
    ::chmod(path.c_str(), 0600);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) l->inode_ = st.st_ino;
    TakeoverListener* self = l.get();
    ferryd.watch(l->fd_, false, [self] { self->on_readable(); });
    return l;
}

TakeoverListener::~TakeoverListener() {
    stop();
    if (fd_ >= 0) ::close(fd_);
    // Only our own socket: a successor may have bound the path already.
    struct stat st {};
    if (inode_ != 0 && ::lstat(path_.c_str(), &st) == 0 && st.st_ino == inode_)
        ::unlink(path_.c_str());
}

void TakeoverListener::stop() {
    if (stopped_) return;
    stopped_ = true;
    if (fd_ >= 0) ferryd_.unwatch(fd_);
    while (!waiting_.empty()) drop_waiting(0, nullptr);
    if (step_ == Step::kSending || step_ == Step::kAwaitRelease) {
        give_up("a hand-over to pid " + std::to_string(successor_pid_) + " was under way",
                "stopping");
    } else if (step_ != Step::kIdle) {
        host_.log(MigrateLog::kWarn, "takeover: stopping during a hand-over; checkpoint kept in %s",
                  (path_ + ".checkpoint").c_str());
        close_connection();
        step_ = Step::kIdle;
    }
}

void TakeoverListener::on_readable() {
    for (;;) {
        const int conn = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                // Level-triggered: a connection that cannot be taken would wake the loop at
                // once, again and again. check_deadlines() watches the socket again.
                ferryd_.unwatch(fd_);
                accept_paused_until_ = Clock::now() + kAcceptPause;
            }
            return;
        }
        ucred cred{};
        socklen_t len = sizeof(cred);
        if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
            (cred.uid != ::getuid() && cred.uid != 0)) {
            host_.log(MigrateLog::kWarn, "takeover: refused a connection from uid %u", cred.uid);
            ::close(conn);
            continue;
        }
        if (stopped_ || outcome_ != Outcome::kNone || step_ != Step::kIdle) {
            host_.log(MigrateLog::kWarn,
                      "takeover: closed pid %d's connection: a hand-over to pid %d is in "
                      "progress",
                      static_cast<int>(cred.pid), static_cast<int>(successor_pid_));
            ::close(conn);
            continue;
        }
        if (waiting_.size() >= kMaxWaiting) drop_waiting(0, "it sent no hello yet and others wait");
        waiting_.push_back(Waiting{conn, cred.pid, Clock::now() + kHelloWait, 0});
        ferryd_.watch(conn, false, [this, conn] { on_hello(conn); });
        on_hello(conn);  // a successor says its hello as it connects: often here already
    }
}

void TakeoverListener::drop_waiting(size_t i, const char* why) {
    const Waiting w = waiting_[i];
    waiting_.erase(waiting_.begin() + static_cast<ptrdiff_t>(i));
    if (why != nullptr)
        host_.log(MigrateLog::kWarn, "takeover: closed pid %d's connection: %s",
                  static_cast<int>(w.pid), why);
    ferryd_.unwatch(w.fd);
    ::close(w.fd);
}

void TakeoverListener::on_hello(int fd) {
    size_t i = 0;
    while (i < waiting_.size() && waiting_[i].fd != fd) ++i;
    if (i == waiting_.size()) return;
    Waiting& w = waiting_[i];
    const size_t hello_len = std::strlen(kHello);
    char buf[64];
    // Exactly the hello's bytes: nothing a successor sends after it may be consumed here.
    const ssize_t r = ::recv(fd, buf, hello_len - w.said, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (r <= 0) return drop_waiting(i, "it went away before its hello");
    for (ssize_t k = 0; k < r; ++k, ++w.said) {
        const char c = buf[k];
        if (w.said == kHelloVersionAt && (c == '1' || c == '2')) {
            w.version = c;
            continue;
        }
        if (c != kHello[w.said]) return drop_waiting(i, "not a ferryd asking to take over");
    }
    if (w.said < hello_len) return;
    const Waiting said = w;
    waiting_.erase(waiting_.begin() + static_cast<ptrdiff_t>(i));
    ferryd_.unwatch(fd);
    begin(said.fd, said.pid, said.version);
}

void TakeoverListener::begin(int conn, pid_t pid, char version) {
    host_.log(MigrateLog::kInfo, "takeover: ferryd pid %d asks to take over",
              static_cast<int>(pid));
    successor_pid_ = pid;
    adopts_ = version == '2';
    while (!waiting_.empty()) drop_waiting(0, "a hand-over begins");
    conn_ = conn;
    // No request may change the switch after the capture, and none is answered from a
    // switch that is being handed over; the successor serves the queued ones if it runs.
    ferryd_.hold_control_requests(true);
    paused_at_ = Clock::now();
    paused_ = std::make_unique<ScopedPause>(host_.workers());
    if (!*paused_) return give_up(paused_->status().error().message);
    auto state = MigrationControl(host_).capture(std::nullopt);
    if (!state) return give_up(state.error().message);
    connections_ = state->connections.size();
    stream_ = write_stream(*state);
    host_.log(MigrateLog::kInfo, "takeover: %zu connections captured, %zu bytes, in %.1f ms",
              connections_, stream_.size(), ms_since(paused_at_));
    sent_ = 0;
    fd_sent_ = false;
    word_.clear();
    step_ = Step::kSending;
    deadline_ = paused_at_ + release_wait(stream_.size());
    ferryd_.watch(conn_, true, [this] { on_connection(); });
    on_connection();
}

void TakeoverListener::on_connection() {
    switch (step_) {
        case Step::kSending:
            send_some();
            return;
        case Step::kAwaitRelease:
            if (!read_word()) return;
            if (word_ == "RELEASE") return release();
            // ABORT: the successor found it cannot take this state; nothing changed here.
            return give_up("the successor gave up (" + word_ + ")");
        case Step::kAwaitDone:
            if (!read_word()) return;
            if (word_ == "DONE") return handed_over();
            return successor_failed(word_);
        case Step::kIdle:
        case Step::kAwaitExit:
            return;
    }
}

bool TakeoverListener::send_some() {
    while (sent_ < stream_.size()) {
        const ssize_t w = ::send(conn_, stream_.data() + sent_, stream_.size() - sent_,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            sent_ += static_cast<size_t>(w);
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            return true;  // the connection is full: on when it is writable again
        } else {
            give_up(std::string("the successor went away (") + strerror(errno) + ")");
            return false;
        }
    }
    if (!fd_sent_) {
        if (Status s = send_fd(conn_, ferryd_.control_socket_fd()); !s) {
            if (s.error().code == ErrorCode::kBusy) return true;
            give_up(s.error().message);
            return false;
        }
        fd_sent_ = true;
    }
    step_ = Step::kAwaitRelease;
    ferryd_.watch(conn_, false, [this] { on_connection(); });
    return true;
}

bool TakeoverListener::read_word() {
    char buf[kMaxWord];
    const ssize_t r = ::recv(conn_, buf, kMaxWord - word_.size(), 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return false;
    std::string why;
    if (r <= 0) {
        why = "the connection closed";
    } else {
        word_.append(buf, static_cast<size_t>(r));
        const size_t nl = word_.find('\n');
        if (nl != std::string::npos) {
            word_.resize(nl);  // nothing may follow a word before this side answers
            return true;
        }
        if (word_.size() < kMaxWord) return false;
        why = "a line too long";
    }
    if (step_ == Step::kAwaitRelease)
        give_up("the successor gave up (" + why + ")");
    else
        successor_failed(why);
    return false;
}

void TakeoverListener::close_connection() {
    if (conn_ >= 0) {
        ferryd_.unwatch(conn_);
        ::close(conn_);
        conn_ = -1;
    }
    ferryd_.hold_control_requests(false);
}

void TakeoverListener::give_up(const std::string& why, const char* then) {
    close_connection();
    paused_.reset();  // the workers resume
    std::vector<uint8_t>().swap(stream_);
    step_ = Step::kIdle;
    host_.log(MigrateLog::kWarn, "takeover: %s; %s", why.c_str(), then);
}

void TakeoverListener::release() {
    // The point of no return: the successor has the state and the control socket.
    host_.log(MigrateLog::kInfo,
              "takeover: the successor said RELEASE %.1f ms after the workers "
              "paused (%zu bytes of stream)",
              ms_since(paused_at_), stream_.size());
    const std::string checkpoint = path_ + ".checkpoint";
    if (Status w = write_file_atomic(checkpoint, stream_); !w)
        host_.log(MigrateLog::kWarn, "takeover: %s", w.error().message.c_str());
    std::vector<uint8_t>().swap(stream_);
    paused_.reset();  // release_ports() stops the workers, which must not be parked then
    std::vector<HandedConnection> handed;
    ferryd_.release_ports(adopts_ ? &handed : nullptr);
    const Deadline deadline = Clock::now() + std::chrono::seconds(1);
    send_text(conn_, "RELEASED\n", deadline);
    if (adopts_) {
        // A connection not sent closes here: its peer reconnects to the successor's port.
        send_text(conn_, "CONNECTIONS " + std::to_string(handed.size()) + "\n", deadline);
        for (HandedConnection& h : handed) {
            if (Status s = send_handed(conn_, h, deadline); !s)
                host_.log(MigrateLog::kWarn, "takeover: %s: %s", h.path.c_str(),
                          s.error().message.c_str());
            for (int fd : h.fds) ::close(fd);
        }
    }
    // The guest-visible part of an upgrade starts at the pause: how much of it was here.
    host_.log(MigrateLog::kInfo, "takeover: ports released, %.1f ms after the workers paused",
              ms_since(paused_at_));
    word_.clear();
    step_ = Step::kAwaitDone;
    deadline_ = Clock::now() + kDoneWait;
}

void TakeoverListener::handed_over() {
    close_connection();
    step_ = Step::kIdle;
    ferryd_.control_socket_handed_over();  // the socket is the successor's now
    ferryd_.request_shutdown();
    outcome_ = Outcome::kHandedOver;
    host_.log(MigrateLog::kInfo,
              "takeover: the successor runs; %zu connections handed over, exiting", connections_);
    ::unlink((path_ + ".checkpoint").c_str());
}

void TakeoverListener::successor_failed(const std::string& why) {
    // The successor failed or died before it ran: this ferryd still holds every table and
    // the control socket, so it takes its ports back (once the successor's process, which
    // may hold them, is gone) and goes on where it stopped. Requests stay held until then.
    if (conn_ >= 0) {
        ferryd_.unwatch(conn_);
        ::close(conn_);
        conn_ = -1;
    }
    failed_why_ = why;
    step_ = Step::kAwaitExit;
    deadline_ = Clock::now() + kExitWait;
    if (process_gone(successor_pid_)) reclaim(Ok{});
}

void TakeoverListener::reclaim(const Status& gone) {
    const std::string checkpoint = path_ + ".checkpoint";
    Status back = gone ? ferryd_.reclaim_ports() : gone;
    step_ = Step::kIdle;
    close_connection();
    if (back) {
        ::unlink(checkpoint.c_str());
        // The successor may have named itself the unit's main process before it failed.
        ferryd_.notify_service_manager("MAINPID=" + std::to_string(::getpid()) +
                                       "\nSTATUS=the successor failed; ports reopened, forwarding");
        host_.log(MigrateLog::kWarn,
                  "takeover: the successor failed (%s); ports reopened, going on with %zu "
                  "connections",
                  failed_why_.c_str(), connections_);
        return;
    }
    ferryd_.control_socket_handed_over();
    ferryd_.request_shutdown();
    outcome_ = Outcome::kSuccessorFailed;
    host_.log(MigrateLog::kError,
              "takeover: the successor failed (%s), and the ports cannot be reopened here (%s); "
              "exiting: start ferryd with --restore %s",
              failed_why_.c_str(), back.error().message.c_str(), checkpoint.c_str());
}

void TakeoverListener::check_deadlines() {
    const auto now = Clock::now();
    if (accept_paused_until_ != Clock::time_point{} && now >= accept_paused_until_ && !stopped_) {
        accept_paused_until_ = {};
        ferryd_.watch(fd_, false, [this] { on_readable(); });
    }
    for (size_t i = 0; i < waiting_.size();) {
        if (now >= waiting_[i].deadline)
            drop_waiting(i, "no hello in time");
        else
            ++i;
    }
    switch (step_) {
        case Step::kSending:
        case Step::kAwaitRelease:
            if (now >= deadline_) {
                char why[128];
                std::snprintf(why, sizeof(why),
                              "the successor did not say RELEASE within %.1f s of the pause; "
                              "workers resumed",
                              seconds(deadline_ - paused_at_));
                give_up(why);
            }
            return;
        case Step::kAwaitDone:
            if (now >= deadline_) successor_failed("no word from it in time");
            return;
        case Step::kAwaitExit:
            if (process_gone(successor_pid_))
                reclaim(Ok{});
            else if (now >= deadline_)
                reclaim(make_error(ErrorCode::kFailed, "the successor did not exit"));
            return;
        case Step::kIdle:
            return;
    }
}

namespace {

/// Connects to path and receives the stream and the control socket. @return the hand-over,
/// its stream, or why not (the predecessor then goes on)
Result<Takeover> takeover_begin(const std::string& path, double timeout_s,
                                std::vector<uint8_t>* stream_out, char version,
                                bool* hello_refused) {
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
    if (Status s = send_text(t.conn, hello(version), deadline); !s) return fail(s.error());
    // A predecessor that does not know this hello's version closes before sending anything.
    pollfd p{t.conn, POLLIN, 0};
    uint8_t first = 0;
    ssize_t peeked = 1;
    if (::poll(&p, 1, poll_left(deadline)) > 0) peeked = ::recv(t.conn, &first, 1, MSG_PEEK);
    if (peeked == 0 || (peeked < 0 && errno == ECONNRESET)) {
        *hello_refused = true;
        ::close(t.conn);
        return make_error(ErrorCode::kFailed, "takeover: the predecessor closed on the hello");
    }
    t.adopts = version == '2';
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
    if (!t.adopts) return Ok{};
    // Past the point of no return: connections that do not arrive whole are closed, and their
    // peers reconnect to the new ports.
    auto count = read_line(t.conn, deadline);
    unsigned long n = 0;
    if (!count || std::sscanf(count->c_str(), "CONNECTIONS %lu", &n) != 1 ||
        n > kMaxHandedConnections) {
        t.connections_error = "no count of connections";
        return Ok{};
    }
    for (unsigned long i = 0; i < n; ++i) {
        auto h = recv_handed(t.conn, in_seconds(5));
        if (!h) {
            t.connections_error = h.error().message;
            break;
        }
        t.connections.push_back(std::move(*h));
    }
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
    bool refused = false;
    auto t = takeover_begin(path, timeout_s, &stream, '2', &refused);
    if (!t && refused) t = takeover_begin(path, timeout_s, &stream, '1', &refused);
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
