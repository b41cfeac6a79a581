#include "control/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace ferry {

bool notify_service_manager(const std::string& state) {
    const char* name = std::getenv("NOTIFY_SOCKET");
    if (name == nullptr || name[0] == '\0') return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const size_t len = std::strlen(name);
    // A path must be absolute; an abstract name starts with '@', which becomes the NUL byte.
    if ((name[0] != '/' && name[0] != '@') || len >= sizeof(addr.sun_path)) return false;
    std::memcpy(addr.sun_path, name, len);
    if (name[0] == '@') addr.sun_path[0] = '\0';
    const auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    // The kernel attaches our pid and uid (the receiver sets SO_PASSCRED): the service manager
    // learns who sent this without anything in the payload.
    ssize_t r;
    do {
        r = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                     reinterpret_cast<const sockaddr*>(&addr), addr_len);
    } while (r < 0 && errno == EINTR);
    ::close(fd);
    return r == static_cast<ssize_t>(state.size());
}

uint64_t parse_watchdog_usec(const std::string& text) {
    if (text.empty() || text.size() > 19) return 0;
    uint64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return 0;
        v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    return v;
}

uint64_t watchdog_usec_from_env() {
    const char* usec = std::getenv("WATCHDOG_USEC");
    if (usec == nullptr) return 0;
    // WATCHDOG_PID names the process the interval is meant for; a child that inherited the
    // variables must not ping in its parent's place.
    if (const char* pid = std::getenv("WATCHDOG_PID");
        pid != nullptr && parse_watchdog_usec(pid) != static_cast<uint64_t>(::getpid()))
        return 0;
    return parse_watchdog_usec(usec);
}

bool WatchdogPinger::tick(Clock::time_point now) {
    if (!enabled() || (last_ != Clock::time_point{} && now - last_ < period_)) return false;
    last_ = now;
    notify_service_manager("WATCHDOG=1");
    return true;
}

}  // namespace ferry
