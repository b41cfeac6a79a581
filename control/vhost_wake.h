// Wakes DPDK's vhost-user event thread so that it sees a server socket just added.
//
// DPDK 22.11's vhost library (lib/vhost/fd_man.c) serves every vhost-user socket from one
// thread, "vhost-events", that poll()s its descriptors with a 1 s timeout and rebuilds the poll
// set only when it wakes. A client connection wakes it (vhost_user_add_connection writes to its
// pipe) but a server socket's listening descriptor does not (vhost_user_start_server only adds
// it). So a front-end connecting to a freshly made server socket is accepted only when the
// thread next wakes: up to 1 s later. That is the guest's pause in a live upgrade whose QEMU
// reconnects to the new ferryd's socket (docs/migration.md, "Live upgrade"), and in a port
// re-added while its QEMU retries. A signal interrupts the thread's poll() (never restarted),
// and the thread rebuilds its set at once.
#pragma once

namespace ferry {

/// Interrupts the vhost-user event thread's poll(), if the thread exists. Its handler does
/// nothing and has SA_RESTART, so the thread's other system calls (the reads of a vhost-user
/// message) resume as if nothing happened. Context: control thread, after a server-mode
/// vhost-user socket was started (the port's configure). @return whether a thread was woken
bool vhost_events_wake();

}  // namespace ferry
