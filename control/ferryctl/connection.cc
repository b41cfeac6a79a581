#include "control/ferryctl/connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>

namespace ferry {
namespace {

using Clock = std::chrono::steady_clock;

/// Milliseconds left until deadline, at least 0. Context: ferryctl.
int ms_left(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return static_cast<int>(std::max<int64_t>(left.count(), 0));
}

}  // namespace

Result<std::string> exchange(const std::string& path, const std::string& request,
                             double timeout_s) {
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(timeout_s));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) {
        return make_error(ErrorCode::kFailed, "socket path '" + path + "' is too long");
    }
    std::memcpy(addr.sun_path, path.data(), path.size());
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return make_error(ErrorCode::kFailed, std::string("socket: ") + std::strerror(errno));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};

    // A unix socket connects at once or fails; EAGAIN means the server's backlog is full.
    while (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        if (errno == EAGAIN && ms_left(deadline) > 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        std::string hint = errno == ENOENT || errno == ECONNREFUSED
                               ? " (is ferryd running? choose the socket with -s or FERRY_SOCKET)"
                           : errno == EACCES ? " (the socket is mode 0660: run as root or as a "
                                               "member of its group)"
                                             : "";
        std::string message = "cannot connect to ferryd at " + path + ": ";
        message += std::strerror(errno);
        message += hint;
        return make_error(ErrorCode::kFailed, std::move(message));
    }

    char seconds[32];
    std::snprintf(seconds, sizeof(seconds), "%g", timeout_s);
    std::string timeout_message = "no answer from ferryd at " + path + " within " + seconds + " s";
    for (size_t sent = 0; sent < request.size();) {
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, ms_left(deadline)) == 0) {
            return make_error(ErrorCode::kFailed, timeout_message);
        }
        ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return make_error(ErrorCode::kFailed,
                              std::string("cannot send to ferryd: ") + std::strerror(errno));
        }
        if (n > 0) sent += static_cast<size_t>(n);
    }

    std::string response;
    for (;;) {
        if (auto nl = response.find('\n'); nl != std::string::npos) {
            response.resize(nl);
            return response;
        }
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, ms_left(deadline)) == 0) {
            return make_error(ErrorCode::kFailed, timeout_message);
        }
        char buf[65536];
        ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            return make_error(ErrorCode::kFailed,
                              "ferryd at " + path + " closed the connection without an answer");
        }
        if (n > 0) response.append(buf, static_cast<size_t>(n));
    }
}

}  // namespace ferry
