// The control socket: a unix stream socket speaking JSON-RPC 2.0, one JSON object per line each
// way. Single-threaded and epoll-based; the control thread drives it with run_once() from its own
// loop and can hang its other file descriptors (signalfd, MAC-learn eventfd) on the same epoll set
// with add_watch(). A slow or hostile client can cost memory up to its limits, never a blocked
// control thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "control/jsonrpc.h"
#include "dataplane/result.h"

namespace ferry {

struct ControlServerLimits {
    size_t max_request_bytes = 1 << 20;  // longest request line, newline excluded
    int idle_timeout_ms = 60000;  // a client with no complete request for this long is closed
    size_t max_clients = 64;      // further connections are accepted and closed at once
};

class ControlServer {
public:
    /// Creates the socket at path and starts listening. Context: control.
    /// Creates missing parent directories (0755), refuses a path a live server answers on
    /// (kConflict "already in use") or a path that exists and is not a socket (kConflict),
    /// replaces a stale socket file, and leaves the socket at mode 0660.
    /// @param dispatcher answers every request line; must outlive the server.
    /// @return the server, or an error naming the path (kInvalidParams for a path too long for
    ///         sun_path, kFailed for system call failures).
    static Result<std::unique_ptr<ControlServer>> listen(const std::string& path,
                                                         JsonRpcDispatcher* dispatcher,
                                                         ControlServerLimits limits = {});

    /// Serves on a socket that is already bound and listening at path (a live upgrade hands the
    /// predecessor's over), so clients never find the path missing. Takes ownership of fd.
    /// Context: control. @return the server, or kFailed
    static Result<std::unique_ptr<ControlServer>> adopt(int fd, const std::string& path,
                                                        JsonRpcDispatcher* dispatcher,
                                                        ControlServerLimits limits = {});

    /// Stops accepting and forgets the path without unlinking it (a successor serves on the
    /// same socket now); connected clients are closed. Context: control.
    void hand_over();

    /// Waits up to timeout_ms (-1: until something happens) for events and handles them all:
    /// accepts, requests, responses, watch callbacks, idle timeouts. Context: control. Returns
    /// early when an idle deadline falls inside the timeout. Handlers and watch callbacks run on
    /// this stack and must not destroy the server.
    void run_once(int timeout_ms);

    /// Calls on_ready from run_once whenever fd is readable, or with writable whenever it is
    /// writable, and when it hangs up or fails (level-triggered, so the callback must drain or
    /// fill fd, or stop watching it, or it is called again). Context: control. The server does
    /// not own fd; call remove_watch before closing it. Watching an fd again replaces its
    /// callback and what it waits for.
    /// @return Ok, or kFailed if epoll refuses the fd (e.g. a regular file).
    Status add_watch(int fd, std::function<void()> on_ready, bool writable = false);

    /// Stops watching fd; safe from inside any callback, including fd's own. Context: control.
    void remove_watch(int fd);

    /// Holds the clients (held true): accepts no connection and reads no request until
    /// hold_requests(false); they wait in the kernel's queues (the listening socket's backlog,
    /// each client's socket), and a held client is not idle. Watches go on. A live upgrade
    /// holds them while it hands the switch over. Context: control.
    void hold_requests(bool held);

    /// Connected clients. Context: control.
    size_t client_count() const { return clients_.size(); }

    /// The listening socket (for a live hand-over or for tests). Context: any.
    int listen_fd() const { return listen_fd_; }

    /// Closes every client and the socket, and unlinks the path if it is still our socket.
    ~ControlServer();

    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

private:
    using Clock = std::chrono::steady_clock;

    struct Client {
        int fd = -1;
        uint32_t token = 0;  // tells this client's epoll events from a reused fd's
        std::string in;      // bytes received, not yet consumed
        size_t scanned = 0;  // bytes of `in` already known to hold no newline
        std::string out;     // response bytes; those before out_sent are already sent
        size_t out_sent = 0;
        Clock::time_point last_activity;  // accept, complete request, or write progress
        bool eof = false;      // peer sends no more: serve its complete lines, then close
        bool closing = false;  // refused (oversized): close once `out` is flushed
        uint32_t events = 0;   // epoll events currently registered
    };
    struct Watch {
        uint32_t token = 0;
        uint32_t events = 0;
        std::function<void()> on_ready;
    };

    ControlServer(std::string path, JsonRpcDispatcher* dispatcher, ControlServerLimits limits);

    void accept_clients();
    void on_client_event(Client& client, uint32_t events);
    bool read_client(Client& client);
    bool serve_lines(Client& client);
    void refuse_oversized(Client& client);
    bool flush_client(Client& client);
    void update_events(Client& client);
    uint32_t wanted_events(const Client& client) const;
    void close_client(int fd);
    void close_idle_clients();
    int wait_timeout(int timeout_ms) const;

    std::string path_;
    JsonRpcDispatcher* dispatcher_;
    ControlServerLimits limits_;
    int epoll_fd_ = -1;
    int listen_fd_ = -1;
    uint64_t socket_inode_ = 0;                // to unlink only our own socket file
    uint32_t next_token_ = 1;                  // 0 is the listening socket
    Clock::time_point accept_paused_until_{};  // after EMFILE, so a full fd table does not spin
    bool held_ = false;                        // hold_requests(true): clients out of epoll_fd_
    std::unordered_map<int, std::unique_ptr<Client>> clients_;
    std::unordered_map<int, Watch> watches_;
};

}  // namespace ferry
