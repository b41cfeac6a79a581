// Control socket server: accept, line framing, per-client buffers, idle timeouts, fd watches.
#include "control/control_server.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace ferry {
namespace {

constexpr int kBacklog = 64;
constexpr int kMaxEvents = 32;
constexpr size_t kReadChunk = size_t{64} * 1024;
constexpr size_t kReadBudget = size_t{256} * 1024;  // per event, so one client cannot hog a turn
constexpr size_t kOutHighWater =
    size_t{4} * 1024 * 1024;  // stop serving a client that does not read
constexpr auto kAcceptPause = std::chrono::milliseconds(100);

/// "strerror(errno)" for messages. Context: any.
std::string errno_text() {
    return std::strerror(errno);
}

/// epoll user data: the fd in the low half, a token in the high half (0 = listening socket).
uint64_t pack(int fd, uint32_t token) {
    return (static_cast<uint64_t>(token) << 32) | static_cast<uint32_t>(fd);
}

/// Fills a sockaddr_un. Context: control.
/// @return false if path does not fit in sun_path with its terminating NUL.
bool make_address(const std::string& path, sockaddr_un* addr) {
    *addr = {};
    addr->sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(addr->sun_path)) return false;
    std::memcpy(addr->sun_path, path.data(), path.size());
    return true;
}

/// Creates every missing directory above path's last component, mode 0755. Context: control.
/// @return Ok, or kFailed naming the directory that could not be made.
Status make_parent_dirs(const std::string& path) {
    for (size_t slash = path.find('/', 1); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
        std::string dir = path.substr(0, slash);
        if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
            return make_error(ErrorCode::kFailed,
                              "cannot create directory '" + dir + "': " + errno_text());
        }
    }
    return Ok{};
}

/// Makes path free for bind: refuses it if a live server answers there or it is not a socket,
/// removes it if it is a stale socket. Context: control.
/// @return Ok, kConflict, or kFailed.
Status claim_path(const std::string& path, const sockaddr_un& addr) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return Ok{};
        return make_error(ErrorCode::kFailed, "cannot stat '" + path + "': " + errno_text());
    }
    if (!S_ISSOCK(st.st_mode)) {
        return make_error(ErrorCode::kConflict, "'" + path + "' exists and is not a socket");
    }
    // Non-blocking, so a live server with a full backlog reads as EAGAIN instead of a hang.
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0) return make_error(ErrorCode::kFailed, "socket: " + errno_text());
    int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    int err = errno;
    ::close(probe);
    if (rc == 0 || err == EAGAIN) {
        return make_error(ErrorCode::kConflict,
                          "control socket '" + path + "' is already in use by a running server");
    }
    if (err != ECONNREFUSED) {
        return make_error(ErrorCode::kFailed, "cannot probe '" + path + "': " + std::strerror(err));
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return make_error(ErrorCode::kFailed,
                          "cannot remove stale socket '" + path + "': " + errno_text());
    }
    return Ok{};
}

}  // namespace

ControlServer::ControlServer(std::string path, JsonRpcDispatcher* dispatcher,
                             ControlServerLimits limits)
    : path_(std::move(path)), dispatcher_(dispatcher), limits_(limits) {}

Result<std::unique_ptr<ControlServer>> ControlServer::listen(const std::string& path,
                                                             JsonRpcDispatcher* dispatcher,
                                                             ControlServerLimits limits) {
    sockaddr_un addr;
    if (!make_address(path, &addr)) {
        return make_error(ErrorCode::kInvalidParams,
                          "control socket path '" + path + "' must be 1.." +
                              std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
    }
    if (Status dirs = make_parent_dirs(path); !dirs) return dirs.error();
    if (Status claimed = claim_path(path, addr); !claimed) return claimed.error();

    // The destructor undoes whatever part of the set-up below succeeded.
    std::unique_ptr<ControlServer> server(new ControlServer(path, dispatcher, limits));
    server->epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (server->epoll_fd_ < 0) return make_error(ErrorCode::kFailed, "epoll: " + errno_text());
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return make_error(ErrorCode::kFailed, "socket: " + errno_text());
    server->listen_fd_ = fd;
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
        // EADDRINUSE here means another server won the race since claim_path.
        return make_error(errno == EADDRINUSE ? ErrorCode::kConflict : ErrorCode::kFailed,
                          "cannot bind '" + path + "': " + errno_text());
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) server->socket_inode_ = st.st_ino;
    // Between bind and listen nobody can connect, so the mode is right before anyone could.
    if (::chmod(path.c_str(), 0660) != 0) {
        return make_error(ErrorCode::kFailed, "cannot chmod '" + path + "': " + errno_text());
    }
    if (::listen(fd, kBacklog) != 0) {
        return make_error(ErrorCode::kFailed, "cannot listen on '" + path + "': " + errno_text());
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = pack(fd, 0);
    if (::epoll_ctl(server->epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        return make_error(ErrorCode::kFailed, "epoll_ctl: " + errno_text());
    }
    return server;
}

Result<std::unique_ptr<ControlServer>> ControlServer::adopt(int fd, const std::string& path,
                                                            JsonRpcDispatcher* dispatcher,
                                                            ControlServerLimits limits) {
    std::unique_ptr<ControlServer> server(new ControlServer(path, dispatcher, limits));
    server->listen_fd_ = fd;
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
        ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
        return make_error(ErrorCode::kFailed, "control socket: " + errno_text());
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) server->socket_inode_ = st.st_ino;
    server->epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (server->epoll_fd_ < 0) return make_error(ErrorCode::kFailed, "epoll: " + errno_text());
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = pack(fd, 0);
    if (::epoll_ctl(server->epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0)
        return make_error(ErrorCode::kFailed, "epoll_ctl: " + errno_text());
    return server;
}

void ControlServer::hand_over() {
    for (auto& [fd, client] : clients_) ::close(fd);
    clients_.clear();
    if (listen_fd_ >= 0) {
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
        ::close(listen_fd_);
        listen_fd_ = -1;
    }
    socket_inode_ = 0;  // the path is the successor's now: the destructor leaves it alone
}

ControlServer::~ControlServer() {
    for (auto& [fd, client] : clients_) ::close(fd);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    // Unlink only the socket we bound: a successor may already have replaced the file.
    struct stat st {};
    if (socket_inode_ != 0 && ::lstat(path_.c_str(), &st) == 0 && st.st_ino == socket_inode_ &&
        S_ISSOCK(st.st_mode)) {
        ::unlink(path_.c_str());
    }
}

void ControlServer::hold_requests(bool held) {
    if (held == held_) return;
    held_ = held;
    if (held) {
        // Out of the epoll set altogether: a held client that hangs up would otherwise be
        // reported (EPOLLHUP) on every wait.
        if (listen_fd_ >= 0) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
        accept_paused_until_ = {};
        for (auto& [fd, client] : clients_) {
            ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
            client->events = 0;
        }
        return;
    }
    epoll_event ev{};
    if (listen_fd_ >= 0) {
        ev.events = EPOLLIN;
        ev.data.u64 = pack(listen_fd_, 0);
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
    }
    const auto now = Clock::now();
    std::vector<int> broken;
    for (auto& [fd, client] : clients_) {
        client->last_activity = now;  // the hold was not the client's idleness
        ev.events = wanted_events(*client);
        ev.data.u64 = pack(fd, client->token);
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0)
            client->events = ev.events;
        else
            broken.push_back(fd);
    }
    for (int fd : broken) close_client(fd);
}

void ControlServer::run_once(int timeout_ms) {
    if (!held_ && accept_paused_until_ != Clock::time_point{} &&
        Clock::now() >= accept_paused_until_) {
        accept_paused_until_ = {};
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = pack(listen_fd_, 0);
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
    }
    epoll_event events[kMaxEvents];
    int n = ::epoll_wait(epoll_fd_, events, kMaxEvents, wait_timeout(timeout_ms));
    for (int i = 0; i < n; ++i) {
        int fd = static_cast<int>(static_cast<uint32_t>(events[i].data.u64));
        uint32_t token = static_cast<uint32_t>(events[i].data.u64 >> 32);
        // Tokens make a stale event (its fd closed and reused earlier in this batch) a no-op.
        // A watch callback earlier in this batch may have held the clients: their events wait.
        if (token == 0 && fd == listen_fd_) {
            if (!held_) accept_clients();
        } else if (auto c = clients_.find(fd); c != clients_.end() && c->second->token == token) {
            if (!held_) on_client_event(*c->second, events[i].events);
        } else if (auto w = watches_.find(fd); w != watches_.end() && w->second.token == token) {
            auto on_ready = w->second.on_ready;  // the callback may remove its own watch
            on_ready();
        }
    }
    if (!held_) close_idle_clients();
}

Status ControlServer::add_watch(int fd, std::function<void()> on_ready, bool writable) {
    const uint32_t events = writable ? EPOLLOUT : EPOLLIN;
    if (auto it = watches_.find(fd); it != watches_.end()) {
        if (it->second.events != events) {
            epoll_event ev{};
            ev.events = events;
            ev.data.u64 = pack(fd, it->second.token);
            if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) != 0)
                return make_error(ErrorCode::kFailed,
                                  "cannot watch fd " + std::to_string(fd) + ": " + errno_text());
            it->second.events = events;
        }
        it->second.on_ready = std::move(on_ready);
        return Ok{};
    }
    uint32_t token = next_token_++;
    if (next_token_ == 0) next_token_ = 1;
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = pack(fd, token);
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        return make_error(ErrorCode::kFailed,
                          "cannot watch fd " + std::to_string(fd) + ": " + errno_text());
    }
    watches_[fd] = Watch{token, events, std::move(on_ready)};
    return Ok{};
}

void ControlServer::remove_watch(int fd) {
    if (watches_.erase(fd) == 0) return;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);  // fails harmlessly if fd is closed
}

/// Accepts every pending connection; those beyond max_clients get one error line and are
/// closed. Context: control.
void ControlServer::accept_clients() {
    for (;;) {
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                // Level-triggered: a pending connection we cannot take would wake us forever.
                epoll_event ev{};
                ev.data.u64 = pack(listen_fd_, 0);
                ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
                accept_paused_until_ = Clock::now() + kAcceptPause;
            }
            return;
        }
        if (clients_.size() >= limits_.max_clients) {
            std::string line =
                make_error_line(
                    make_error(ErrorCode::kBusy, "too many control clients (limit " +
                                                     std::to_string(limits_.max_clients) + ")")) +
                "\n";
            // Best effort: a fresh socket's buffer takes one short line.
            [[maybe_unused]] ssize_t sent =
                ::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            ::close(fd);
            continue;
        }
        auto client = std::make_unique<Client>();
        client->fd = fd;
        client->token = next_token_++;
        if (next_token_ == 0) next_token_ = 1;
        client->last_activity = Clock::now();
        client->events = EPOLLIN | EPOLLRDHUP;
        epoll_event ev{};
        ev.events = client->events;
        ev.data.u64 = pack(fd, client->token);
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
            ::close(fd);
            continue;
        }
        clients_.emplace(fd, std::move(client));
    }
}

/// Reads, serves complete lines, writes, and closes the client when it is done or broken.
/// Context: control. `client` may be destroyed on return.
void ControlServer::on_client_event(Client& client, uint32_t events) {
    int fd = client.fd;
    if (events & EPOLLERR) {
        close_client(fd);
        return;
    }
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) && !client.closing && !client.eof &&
        !read_client(client)) {
        // The peer will send no more: serve its complete lines, drop a partial one.
        client.eof = true;
        size_t last_newline = client.in.rfind('\n');
        client.in.resize(last_newline == std::string::npos ? 0 : last_newline + 1);
        client.scanned = 0;
    }
    bool more;
    do {
        more = serve_lines(client);
        if (!flush_client(client)) {
            close_client(fd);
            return;
        }
    } while (more && client.out.size() - client.out_sent < kOutHighWater);
    bool drained = client.out_sent == client.out.size();
    if (drained && (client.closing || (client.eof && client.in.empty()))) {
        close_client(fd);
        return;
    }
    update_events(client);
}

/// Appends what the socket holds to client.in, up to kReadBudget. Context: control.
/// @return false if the peer shut down its side or the connection broke.
bool ControlServer::read_client(Client& client) {
    char buf[kReadChunk];
    for (size_t total = 0; total < kReadBudget;) {
        ssize_t n = ::recv(client.fd, buf, sizeof(buf), 0);
        if (n > 0) {
            client.in.append(buf, static_cast<size_t>(n));
            total += static_cast<size_t>(n);
        } else if (n == 0) {
            return false;
        } else if (errno != EINTR) {
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
    }
    return true;
}

/// Answers every complete line in client.in while the client's unsent output stays under
/// kOutHighWater; an over-long line (complete or not) gets an error and puts the client in
/// closing. Context: control.
/// @return true if it stopped for back-pressure with complete lines left.
bool ControlServer::serve_lines(Client& client) {
    size_t start = 0;
    bool stopped_early = false;
    for (;;) {
        if (client.closing) break;
        if (client.out.size() - client.out_sent >= kOutHighWater) {
            stopped_early = true;
            break;
        }
        size_t newline = client.in.find('\n', std::max(start, client.scanned));
        if (newline == std::string::npos) break;
        std::string_view line(client.in.data() + start, newline - start);
        start = newline + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() > limits_.max_request_bytes) {
            refuse_oversized(client);
            break;
        }
        client.last_activity = Clock::now();
        if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
        if (auto response = dispatcher_->handle_line(line)) {
            client.out += *response;
            client.out += '\n';
        }
    }
    if (client.closing) return false;
    client.in.erase(0, start);
    client.scanned = stopped_early ? 0 : client.in.size();
    if (!stopped_early && !client.eof) {
        // A partial line that is already too long will never become a valid request.
        size_t partial = client.in.size();
        if (partial > 0 && client.in.back() == '\r') --partial;
        if (partial > limits_.max_request_bytes) refuse_oversized(client);
    }
    return stopped_early;
}

/// Queues the "request too large" error and stops reading; the client is closed once the error
/// is written. Context: control.
void ControlServer::refuse_oversized(Client& client) {
    client.out += make_error_line(make_error(
        ErrorCode::kInvalidRequest,
        "request too large (limit " + std::to_string(limits_.max_request_bytes) + " bytes)"));
    client.out += '\n';
    client.closing = true;
    client.in.clear();
    client.scanned = 0;
}

/// Sends as much queued output as the socket takes without blocking. Context: control.
/// @return false if the connection is broken.
bool ControlServer::flush_client(Client& client) {
    while (client.out_sent < client.out.size()) {
        ssize_t n = ::send(client.fd, client.out.data() + client.out_sent,
                           client.out.size() - client.out_sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            client.out_sent += static_cast<size_t>(n);
            client.last_activity = Clock::now();  // a slow reader making progress is not idle
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        }
    }
    client.out.clear();
    client.out_sent = 0;
    return true;
}

/// Registers EPOLLIN while the client may send and is not backed up, EPOLLOUT while output is
/// queued. Context: control.
void ControlServer::update_events(Client& client) {
    const uint32_t want = wanted_events(client);
    if (want == client.events) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = pack(client.fd, client.token);
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, client.fd, &ev) == 0) client.events = want;
}

/// What update_events registers for a client. Context: control.
uint32_t ControlServer::wanted_events(const Client& client) const {
    const size_t pending = client.out.size() - client.out_sent;
    uint32_t want = 0;
    if (!client.closing && !client.eof && pending < kOutHighWater) want |= EPOLLIN | EPOLLRDHUP;
    if (pending > 0) want |= EPOLLOUT;
    return want;
}

/// Closes and forgets one client. Context: control.
void ControlServer::close_client(int fd) {
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    clients_.erase(fd);
}

/// Closes clients with no complete request and no write progress for idle_timeout_ms.
/// Context: control.
void ControlServer::close_idle_clients() {
    auto now = Clock::now();
    auto idle = std::chrono::milliseconds(limits_.idle_timeout_ms);
    std::vector<int> expired;
    for (auto& [fd, client] : clients_) {
        if (now - client->last_activity >= idle) expired.push_back(fd);
    }
    for (int fd : expired) close_client(fd);
}

/// The epoll_wait timeout: the caller's, cut short by the nearest idle deadline or the end of
/// an accept pause. Context: control.
int ControlServer::wait_timeout(int timeout_ms) const {
    auto deadline = Clock::time_point::max();
    auto idle = std::chrono::milliseconds(limits_.idle_timeout_ms);
    for (const auto& [fd, client] : clients_) {
        if (held_) break;  // a held client is not idle
        deadline = std::min(deadline, client->last_activity + idle);
    }
    if (accept_paused_until_ != Clock::time_point{}) {
        deadline = std::min(deadline, accept_paused_until_);
    }
    if (deadline == Clock::time_point::max()) return timeout_ms;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    int left_ms = static_cast<int>(std::clamp<int64_t>(left, 0, INT_MAX));
    return timeout_ms < 0 ? left_ms : std::min(timeout_ms, left_ms);
}

}  // namespace ferry
