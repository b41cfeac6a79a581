// A vhost-user connection handed from a ferryd to its successor in a live upgrade, so that the
// guest's NIC never sees its back-end go away (docs/migration.md, "Live upgrade").
//
// Closing a vhost-user connection makes QEMU set its NIC's link down, and a guest drops what it
// sends while its link is down: every upgrade cost a TCP retransmission timeout (200 ms at the
// least). Instead the running ferryd, once its workers stopped, hands the connection itself to
// the successor, with what the front-end told it: negotiated features, the guest's memory
// regions (their fds), each ring's addresses, size, next index, kick and call eventfds. The
// successor's vhost library learns all of it again from a replay: its port's socket is swapped
// for one end of a socketpair, this side plays QEMU's part on the other end (the messages QEMU
// sent, in QEMU's order), and once the library has taken the last of them the socket is
// swapped for the inherited connection. QEMU never notices: no message, no reconnect, the
// rings go on from the index where the old ferryd stopped.
//
// DPDK 22.11's vhost library has no way to adopt a connection; what this uses is public API
// (rte_vhost_get_mem_table, rte_vhost_get_vhost_vring, rte_vhost_get_vring_base, the negotiated
// features) and dup3() onto the descriptor the library polls. A server-mode port replays over
// a connection to its own socket instead of a socketpair.
#pragma once

#include <string>
#include <vector>

#include "dataplane/result.h"
#include "migrate/takeover.h"

namespace ferry {

/// The connection of the vhost-user port on socket `path` (its device vid; server: the port
/// is in server mode), for the successor: what its front-end negotiated and duplicates of its
/// descriptors. The caller's workers must have
/// stopped (the rings' indexes are final). Context: control.
/// @return kUnsupported when the connection cannot be handed over (a migration is logging
///         dirty pages, packed rings, an IOMMU, descriptors still in flight): the port closes
///         as before and its front-end reconnects
Result<HandedConnection> vhost_handover_capture(const std::string& path, int vid, bool server);

/// Successor: the predecessor's connections, adopted by the ports opened next
/// (vhost_handover_adopt); the rest are closed by vhost_handover_discard. Context: control.
void vhost_handover_offer(std::vector<HandedConnection> connections);

/// Successor, port `path` just started (server: in server mode): when a connection for it was
/// offered, replays it into the port's vhost library and swaps the library's socket for it.
/// On failure the inherited connection is closed (its front-end then reconnects, or accepts
/// the connection a client-mode port made as it opened, and negotiates anew). Context:
/// control. @return whether a connection was adopted; an error says why one offered was not
Result<bool> vhost_handover_adopt(const std::string& path, bool server);

/// Successor: closes the offered connections no port adopted. Context: control.
void vhost_handover_discard();

}  // namespace ferry
