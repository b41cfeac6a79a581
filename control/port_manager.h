// A port's DPDK device: probing from devargs or a vhost-user socket, queue setup (the port's rx
// queues, one tx queue per worker), start, link state, and teardown. Context: control thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "control/config.h"
#include "dataplane/result.h"

struct rte_mempool;

namespace ferry {

/// What the device's event callback is called with (port_manager.cc).
struct LinkCallback;

struct PortDevice {
    uint16_t dpdk_port = 0;
    std::string dev_name;  // DPDK device name, e.g. net_vhost_vm1 or net_pcap0
    std::string devargs;   // what was probed
    uint16_t tx_queues = 0;
    // Registered with DPDK until port_device_close; freed with the last copy of the device
    // after that, so that adding and removing ports costs no memory for good.
    std::shared_ptr<LinkCallback> events;
};

/// The DPDK device arguments for a port: vhost-user ports become a net_vhost device with
/// enough queue pairs for the port's rx queues and for one tx queue per worker.
std::string port_devargs(const PortConfig& cfg, uint16_t n_workers);

/// Probes, configures and starts the port's device, registering on_link_event for link state
/// changes (called on DPDK's interrupt thread with arg). On failure nothing is left behind.
/// Context: control.
Result<PortDevice> port_device_open(const PortConfig& cfg, uint16_t n_workers, rte_mempool* pool,
                                    void (*on_link_event)(void*), void* arg);

/// Unregisters the device's event callback (waiting while DPDK's interrupt thread runs it), then
/// stops, closes and detaches the device. Context: control, after no worker polls it.
void port_device_close(const PortDevice& dev);

/// Whether the device reports its link up (for vhost-user: a peer is connected and ready).
bool port_link_up(uint16_t dpdk_port);

/// The port's MAC address as text. Context: control.
std::string port_mac(uint16_t dpdk_port);

}  // namespace ferry
