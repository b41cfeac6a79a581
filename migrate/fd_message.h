// Descriptors over a unix socket (SCM_RIGHTS): the live upgrade's control socket and handed
// connections, and the vhost-user messages its successor replays. Context: any.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <vector>

namespace ferry {

/// sendmsg(2) of n bytes at data with fds in its control data (none when n_fds is 0); the
/// descriptors go with the first byte. @return as sendmsg (errno set on -1)
ssize_t send_with_fds(int sock, const void* data, size_t n, const int* fds, size_t n_fds,
                      int flags);

/// recvmsg(2) of at most n bytes into data, appending the descriptors that came with them to
/// *fds (received close-on-exec; at most max_fds, more set *truncated). @return as recvmsg
ssize_t recv_with_fds(int sock, void* data, size_t n, std::vector<int>* fds, size_t max_fds,
                      int flags, bool* truncated);

}  // namespace ferry
