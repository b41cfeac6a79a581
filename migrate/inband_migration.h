// In-band migration: a vhost-user port's flows travel inside QEMU's own live migration
// (VHOST_USER_PROTOCOL_F_DEVICE_STATE, QEMU >= 10; docs/migration.md, "In-band migration").
// This is the DPDK side: offering the protocol feature on a net_vhost socket, attaching the
// device-state protocol (migrate/vhost_device_state.h) to each connection through DPDK's
// external message hook, and the switch's capture and install (through its MigrationHost) as that
// protocol's hooks.
//
// net_vhost tells the application nothing about a connection until its device is ready, and
// DPDK's hook is per connection (vid). A destination QEMU sends SET_DEVICE_STATE_FD before its
// device ever starts, and nothing reaches the application before that. So the port's vids are
// found by socket path: on each LSC and queue-state event of the port (raised by net_vhost on
// the vhost-user message thread) and, for ports without a running device, from the control
// thread's housekeeping (each pass of its loop, 50 ms apart or less). See docs/migration.md
// for the race that the latter leaves and for the way out (owning the sockets via rte_vhost).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dataplane/result.h"
#include "migrate/host.h"

namespace ferry {

/// Offers VHOST_USER_PROTOCOL_F_DEVICE_STATE on the vhost-user socket at path. Call right
/// after rte_eth_dev_configure (where net_vhost registers the socket), before a front-end
/// negotiates. Context: control. @return kFailed when the socket is not registered
Status inband_offer(const std::string& path);

/// Makes in-band state transfers of the port at path use host's capture and install (the
/// port's transfers keep host as long as they run). Context: control (port added).
void inband_add_port(std::shared_ptr<MigrationHost> host, const std::string& port,
                     const std::string& path);
/// Stops the port's transfers (nothing is installed after) and forgets it. Context: control
/// (port deleted).
void inband_remove_port(const std::string& path);

/// In-band transfers under way and the last ones that ended, for migrate.status: a list of
/// {port, direction ("save"/"load"), result ("running"/"ok"/"failed"), bytes, connections,
/// ms, error?}, newest last. Context: control.
nlohmann::json inband_status();

/// The port's device runs again: a migration that saved its state failed or was cancelled, so
/// the connections stay here. Context: control (link up).
void inband_device_resumed(const std::string& path);

/// The vhost library's connections (vids) on the socket at path. Context: control, or the
/// vhost-user message thread.
std::vector<int> vhost_connections(const std::string& path);

/// Attaches the device-state handler to the connections on path that lack it. Context: the
/// vhost-user message thread (net_vhost's LSC and queue-state events), or control. When the
/// connection that took a confirmed SAVE is gone and its device never ran again, the saved
/// connections are retired on the control thread, quietly.
void inband_attach(const std::string& path);

}  // namespace ferry
