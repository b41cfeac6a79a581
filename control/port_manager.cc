#include "control/port_manager.h"

#include <rte_bus.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "control/log.h"
#include "control/offload/offload_manager.h"
#include "control/vhost_handover.h"
#include "control/vhost_wake.h"
#include "migrate/inband_migration.h"

namespace ferry {
namespace {

constexpr uint16_t kRxDescriptors = 1024;
constexpr uint16_t kTxDescriptors = 1024;

}  // namespace

struct LinkCallback {
    void (*fn)(void*);
    void* arg;
    std::string vhost_path;  // a vhost-user port's socket: in-band migration attaches there
};

namespace {

int on_eth_event(uint16_t, rte_eth_event_type, void* cb_arg, void*) {
    auto* cb = static_cast<LinkCallback*>(cb_arg);
    // net_vhost raises these on the vhost-user message thread, where a connection's handlers
    // can be attached safely (docs/migration.md, "In-band migration").
    if (!cb->vhost_path.empty()) inband_attach(cb->vhost_path);
    cb->fn(cb->arg);
    return 0;
}

/// Unregisters on_eth_event from a device's events. DPDK refuses (-EAGAIN) while its interrupt
/// thread is inside the callback: wait until it has left, so that the callback's argument can
/// be freed afterwards. Context: control.
void unregister_events(uint16_t port) {
    for (const rte_eth_event_type ev : {RTE_ETH_EVENT_INTR_LSC, RTE_ETH_EVENT_QUEUE_STATE}) {
        while (rte_eth_dev_callback_unregister(port, ev, on_eth_event,
                                               reinterpret_cast<void*>(-1)) == -EAGAIN)
            rte_delay_us_sleep(100);
    }
}

/// Whether vhost-user ports offer their state to QEMU's migration (the default); the
/// environment variable FERRY_VHOST_DEVICE_STATE=off turns it off (measurements, tests).
bool device_state_offered() {
    const char* v = getenv("FERRY_VHOST_DEVICE_STATE");
    return v == nullptr || strcmp(v, "off") != 0;
}

std::string device_name(const std::string& devargs) {
    return devargs.substr(0, devargs.find(','));
}

/// Closes an ethdev and detaches its device from its bus. Context: control.
void close_and_detach(uint16_t pid) {
    rte_eth_dev_info info{};
    rte_device* dev = rte_eth_dev_info_get(pid, &info) == 0 ? info.device : nullptr;
    rte_eth_dev_close(pid);
    if (dev != nullptr) rte_dev_remove(dev);
}

/// Prepares a vhost-user server socket path: a socket file nobody listens on (left by a process
/// that died) is removed; a live one is refused. Context: control.
Status prepare_server_socket(const std::string& path) {
    struct stat st {};
    std::string dir = path.substr(0, path.find_last_of('/'));
    if (!dir.empty() && (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)))
        return make_error(ErrorCode::kFailed,
                          "cannot create " + path + ": directory " + dir + " does not exist");
    if (lstat(path.c_str(), &st) != 0) return Ok{};
    if (!S_ISSOCK(st.st_mode))
        return make_error(ErrorCode::kConflict, path + " exists and is not a socket");
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path.c_str(), std::min(path.size(), sizeof(sa.sun_path) - 1));
    bool live = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
    close(fd);
    if (live) return make_error(ErrorCode::kConflict, path + " is in use by another process");
    unlink(path.c_str());
    FERRY_LOG_INFO_IN(kPort, "removed stale vhost-user socket %s", path.c_str());
    return Ok{};
}

Error dpdk_error(const std::string& what, int rc) {
    return make_error(ErrorCode::kFailed, what + ": " + rte_strerror(rc < 0 ? -rc : rc));
}

/// The rte_eth_conf for a port of the given MTU on a device described by info, whose frames
/// land in mbufs of pool: rxmode.mtu, and when the largest frame (with two VLAN tags and the
/// FCS) does not fit one mbuf, scattered receive and multi-segment transmit where the device
/// offers them. net_vhost offers multi-segment transmit only and net_pcap neither; both chain
/// received mbufs all the same. A NIC that needs scatter and lacks it is refused by its own
/// driver at start. Context: control.
/// @return the configuration, or kInvalidParams when the device's MTU range excludes mtu
Result<rte_eth_conf> port_eth_conf(const PortConfig& cfg, const rte_eth_dev_info& info,
                                   rte_mempool* pool) {
    if (cfg.mtu < info.min_mtu || cfg.mtu > info.max_mtu)
        return make_error(ErrorCode::kInvalidParams,
                          "port " + cfg.name + ": mtu " + std::to_string(cfg.mtu) +
                              " is outside the device's range " + std::to_string(info.min_mtu) +
                              ".." + std::to_string(info.max_mtu));
    rte_eth_conf conf{};
    conf.rxmode.mtu = cfg.mtu;
    if (*info.dev_flags & RTE_ETH_DEV_INTR_LSC) conf.intr_conf.lsc = 1;
    const uint32_t frame =
        uint32_t{cfg.mtu} + RTE_ETHER_HDR_LEN + 2 * RTE_VLAN_HLEN + RTE_ETHER_CRC_LEN;
    const uint32_t room = rte_pktmbuf_data_room_size(pool) - RTE_PKTMBUF_HEADROOM;
    if (frame > room) {
        if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_SCATTER)
            conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_SCATTER;
        if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS)
            conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
    }
    return conf;
}

}  // namespace

std::string port_devargs(const PortConfig& cfg, uint16_t n_workers) {
    if (cfg.type == PortType::kDpdk) return cfg.devargs;
    uint16_t pairs = std::max<uint16_t>(cfg.queues, n_workers);
    return "net_vhost_" + cfg.name + ",iface=" + cfg.path + ",queues=" + std::to_string(pairs) +
           ",client=" + (cfg.mode == VhostMode::kClient ? "1" : "0");
}

Result<PortDevice> port_device_open(const PortConfig& cfg, uint16_t n_workers, rte_mempool* pool,
                                    void (*on_link_event)(void*), void* arg) {
    PortDevice dev;
    dev.devargs = port_devargs(cfg, n_workers);
    dev.dev_name = device_name(dev.devargs);
    uint16_t pid = 0;
    if (rte_eth_dev_get_port_by_name(dev.dev_name.c_str(), &pid) == 0)
        return make_error(ErrorCode::kConflict, "device " + dev.dev_name + " is already attached");
    if (cfg.type == PortType::kVhostUser && cfg.mode == VhostMode::kServer) {
        Status st = prepare_server_socket(cfg.path);
        if (!st) return st.error();
    }
    int rc = rte_dev_probe(dev.devargs.c_str());
    if (rc < 0) return dpdk_error("cannot attach device '" + dev.devargs + "'", rc);
    if (rte_eth_dev_get_port_by_name(dev.dev_name.c_str(), &pid) != 0)
        return make_error(ErrorCode::kFailed, "device " + dev.dev_name + " is not an ethdev");
    dev.dpdk_port = pid;
    dev.tx_queues = n_workers;
    auto fail = [&](Error e) -> Result<PortDevice> {
        close_and_detach(pid);
        return e;
    };

    rte_eth_dev_info info{};
    rc = rte_eth_dev_info_get(pid, &info);
    if (rc != 0) return fail(dpdk_error("cannot query " + dev.dev_name, rc));
    if (cfg.queues > info.max_rx_queues)
        return fail(make_error(ErrorCode::kInvalidParams,
                               "port " + cfg.name + ": device has " +
                                   std::to_string(info.max_rx_queues) + " rx queues, " +
                                   std::to_string(cfg.queues) + " configured"));
    if (n_workers > info.max_tx_queues)
        return fail(make_error(
            ErrorCode::kInvalidParams,
            "port " + cfg.name + ": device has " + std::to_string(info.max_tx_queues) +
                " tx queues, ferryd needs one per worker (" + std::to_string(n_workers) + ")"));
    // Marks set by NIC flow rules let workers skip the lookup; ask for them before configure.
    if (Status st = OffloadManager::negotiate_mark_delivery(pid); !st)
        FERRY_LOG_INFO_IN(kPort, "port %s: flow marks not delivered: %s", cfg.name.c_str(),
                          st.error().message.c_str());
    auto conf = port_eth_conf(cfg, info, pool);
    if (!conf) return fail(conf.error());
    rc = rte_eth_dev_configure(pid, cfg.queues, n_workers, &conf.value());
    if (rc != 0) return fail(dpdk_error("cannot configure " + dev.dev_name, rc));
    // net_vhost registered and started the socket in configure: offer the state transfer
    // now, before a front-end asks for the protocol features.
    // A front-end may be waiting to connect to a server socket (QEMU's reconnect, after a live
    // upgrade): have the vhost-user event thread accept it now rather than within 1 s.
    if (cfg.type == PortType::kVhostUser && cfg.mode == VhostMode::kServer) vhost_events_wake();
    const bool inband = cfg.type == PortType::kVhostUser && device_state_offered();
    if (inband) {
        if (Status st = inband_offer(cfg.path); !st)
            FERRY_LOG_WARN_IN(kPort, "port %s: %s", cfg.name.c_str(), st.error().message.c_str());
    }
    int socket = rte_eth_dev_socket_id(pid);
    if (socket < 0) socket = 0;
    for (uint16_t q = 0; q < cfg.queues; ++q) {
        rc = rte_eth_rx_queue_setup(pid, q, kRxDescriptors, socket, nullptr, pool);
        if (rc != 0) return fail(dpdk_error("rx queue setup on " + dev.dev_name, rc));
    }
    for (uint16_t q = 0; q < n_workers; ++q) {
        rc = rte_eth_tx_queue_setup(pid, q, kTxDescriptors, socket, nullptr);
        if (rc != 0) return fail(dpdk_error("tx queue setup on " + dev.dev_name, rc));
    }
    dev.events = std::make_shared<LinkCallback>(
        LinkCallback{on_link_event, arg, inband ? cfg.path : std::string()});
    rte_eth_dev_callback_register(pid, RTE_ETH_EVENT_INTR_LSC, on_eth_event, dev.events.get());
    rte_eth_dev_callback_register(pid, RTE_ETH_EVENT_QUEUE_STATE, on_eth_event, dev.events.get());
    rc = rte_eth_dev_start(pid);
    if (rc != 0) {
        unregister_events(pid);
        return fail(dpdk_error("cannot start " + dev.dev_name, rc));
    }
    rte_eth_promiscuous_enable(pid);  // a bridge port sees every address; not all devices can
    if (cfg.type == PortType::kVhostUser) {
        // A live upgrade's predecessor may have handed this port's connection over: its
        // front-end then never sees the port go away.
        auto adopted = vhost_handover_adopt(cfg.path, cfg.mode == VhostMode::kServer);
        if (!adopted)
            FERRY_LOG_WARN_IN(kPort,
                              "port %s: the handed-over connection was not adopted (%s); "
                              "its front-end reconnects",
                              cfg.name.c_str(), adopted.error().message.c_str());
        else if (*adopted)
            FERRY_LOG_INFO_IN(kPort, "port %s: adopted the predecessor's vhost-user connection",
                              cfg.name.c_str());
    }
    FERRY_LOG_DEBUG_IN(
        kPort, "port %s: device %s is DPDK port %u, %u rx and %u tx queues, mtu %u%s%s",
        cfg.name.c_str(), dev.devargs.c_str(), pid, cfg.queues, n_workers, cfg.mtu,
        conf->rxmode.offloads & RTE_ETH_RX_OFFLOAD_SCATTER ? ", rx scatter" : "",
        conf->txmode.offloads & RTE_ETH_TX_OFFLOAD_MULTI_SEGS ? ", tx multi-seg" : "");
    return dev;
}

void port_device_close(const PortDevice& dev) {
    unregister_events(dev.dpdk_port);
    int rc = rte_eth_dev_stop(dev.dpdk_port);
    if (rc != 0)
        FERRY_LOG_WARN_IN(kPort, "stopping %s: %s", dev.dev_name.c_str(), rte_strerror(-rc));
    close_and_detach(dev.dpdk_port);
}

bool port_link_up(uint16_t dpdk_port) {
    rte_eth_link link{};
    if (rte_eth_link_get_nowait(dpdk_port, &link) != 0) return false;
    return link.link_status == RTE_ETH_LINK_UP;
}

std::string port_mac(uint16_t dpdk_port) {
    rte_ether_addr a{};
    if (rte_eth_macaddr_get(dpdk_port, &a) != 0) return "";
    char buf[RTE_ETHER_ADDR_FMT_SIZE];
    rte_ether_format_addr(buf, sizeof(buf), &a);
    return buf;
}

}  // namespace ferry
