#include "migrate/fd_message.h"

#include <sys/socket.h>

#include <cstring>

namespace ferry {

ssize_t send_with_fds(int sock, const void* data, size_t n, const int* fds, size_t n_fds,
                      int flags) {
    iovec iov{const_cast<void*>(data), n};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control(n_fds > 0 ? CMSG_SPACE(sizeof(int) * n_fds) : 0);
    if (n_fds > 0) {
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
        std::memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
    }
    return ::sendmsg(sock, &msg, flags);
}

ssize_t recv_with_fds(int sock, void* data, size_t n, std::vector<int>* fds, size_t max_fds,
                      int flags, bool* truncated) {
    iovec iov{data, n};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * max_fds));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    const ssize_t r = ::recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
    if (r < 0) return r;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const size_t at = fds->size();
        fds->resize(at + k);
        std::memcpy(fds->data() + at, CMSG_DATA(c), k * sizeof(int));
    }
    *truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
    return r;
}

}  // namespace ferry
