// The switch: the one context object of ferryd's control thread. It owns the ports, the worker
// states, the MAC table and the RCU that protects the published port table, and it is the only
// writer of every structure the workers read. Its member functions are defined in
// control/switch*.cc, one file per job; control/switch.cc's opening comment lists them.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/command_table.h"
#include "control/config.h"
#include "control/offload_sync.h"
#include "control/port_addresses.h"
#include "control/port_manager.h"
#include "control/rule_config.h"
#include "control/rule_table.h"
#include "dataplane/counters.h"
#include "dataplane/pauser.h"
#include "dataplane/port_table.h"
#include "dataplane/result.h"
#include "dataplane/worker.h"

struct rte_mempool;
struct rte_rcu_qsbr;

namespace ferry {

struct HandedConnection;  // migrate/takeover.h

class MacTable;
class FlowCache;
class ConntrackControl;
class DpiControl;
struct MeterSet;

class Switch : public Pauser {
public:
    /// Builds the switch after rte_eal_init: mbuf pool, RCU, MAC table, worker states, then
    /// (with_ports) the configured ports and rules. Workers are not started. Context: control
    /// (main lcore).
    static Result<std::unique_ptr<Switch>> create(const Config& cfg, bool with_ports = true);
    /// The configured ports, then the configured rules (which name them): what create() left
    /// out without with_ports. A live upgrade's successor builds its switch before the hand-over
    /// and opens the ports once its predecessor released them. Context: control.
    Status open_configured_ports();
    ~Switch() override;
    Switch(const Switch&) = delete;
    Switch& operator=(const Switch&) = delete;

    /// Launches the worker lcores. Context: control.
    Status start_workers();
    /// Stops and joins the worker lcores. Context: control. Idempotent.
    void stop_workers();

    // Pauser: parks every running worker at the top of its loop (bounded wait).
    Status pause() override;
    void resume() override;

    /// Adds and starts a port, then publishes it to the workers. Context: control.
    /// @return the port's description (as in port_list), or kConflict / kInvalidParams / kFailed
    /// slot: the one it must take (a port reopened after a live upgrade failed), else the
    /// first free one.
    Result<nlohmann::json> add_port(const PortConfig& cfg, std::optional<uint16_t> slot = {});
    /// Unpublishes a port, waits until no worker can touch it, closes it and forgets its MACs.
    Status del_port(const std::string& name);

    /// A port's addresses, configured and observed (ports with port security): {name, addresses:
    /// [{address, prefix_len, flags, seen_s_ago?}]}, or kNotFound. Context: control.
    Result<nlohmann::json> port_addresses(const std::string& name) const;
    /// A port's addresses as port_addresses() lists them, including what the workers reported
    /// last; empty when no port has that name. Context: control.
    std::vector<PortAddress> port_address_list(const std::string& name);
    /// Records (family, address) pairs the port's guest was seen sending from elsewhere (a
    /// migration), as seen now: those the port's security allows, all when it has none.
    /// @return how many were recorded. Context: control.
    using IpBytes = std::array<uint8_t, 16>;
    size_t note_port_addresses(const std::string& name,
                               const std::vector<std::pair<uint8_t, IpBytes>>& seen);
    /// A port's security: {name, security} (null when off), or kNotFound. Context: control.
    Result<nlohmann::json> port_security(const std::string& name) const;
    /// Sets a port's security (nullopt: off) and publishes it: every frame a worker takes from the
    /// port after this returns is checked against it. @return as port_security(), kNotFound or
    /// kInvalidParams. Context: control.
    Result<nlohmann::json> set_port_security(const std::string& name,
                                             std::optional<PortSecurityConfig> security);
    nlohmann::json port_list() const;
    /// Counters of one port (name given) or of all ports. @return kNotFound for an unknown name.
    Result<nlohmann::json> port_stats(const std::string& name) const;
    /// MAC entries, optionally only of one port and/or one VLAN.
    Result<nlohmann::json> mac_list(const std::string& port, std::optional<uint16_t> vlan) const;
    /// Removes MAC entries of one port, or all. @return {"flushed": N}
    Result<nlohmann::json> mac_flush(const std::string& port);
    /// Switch-wide counters: uptime, per-worker packets and cycles, table sizes.
    nlohmann::json stats() const;

    /// Periodic work of the control thread: clock, learn events, aging, link state. Call it at
    /// least every 100 ms. Context: control.
    void housekeeping();
    /// An eventfd that becomes readable when DPDK reports a port event; drain with
    /// handle_port_events(). Context: control.
    int event_fd() const { return event_fd_; }
    void handle_port_events();

    /// The flow rules. Context: control.
    RuleTable& rules() { return *rules_; }
    /// What rule compilation needs: port names and meter ids. Context: control.
    RuleContext rule_context() const;
    /// Entries of one worker's flow cache, read in short slices while only that worker is
    /// paused. @return kNotFound for an lcore that is not a worker.
    Result<nlohmann::json> flow_dump(unsigned lcore, size_t limit);

    /// Connection tracking: shards, rings and the ct.* methods. Context: control.
    ConntrackControl& conntrack() { return *ct_; }
    DpiControl& dpi() { return *dpi_; }
    /// The slot of a port by name, or nullopt. Context: control.
    std::optional<uint16_t> port_slot(const std::string& name) const;
    /// The name of the port in a slot ("#N" when the slot is free now). Context: control.
    std::string port_name(uint16_t slot) const;

    /// Stops the workers and closes every port (a successor ferryd opens them next): the
    /// switch keeps its tables but moves no packet any more. handed (or null): gets the
    /// connections of the vhost-user ports that can be handed to the successor
    /// (control/vhost_handover.h), whose peers then never see them close. Context: control.
    void release_ports(std::vector<HandedConnection>* handed);
    /// Reopens the ports release_ports() closed, each in its slot, and starts the workers:
    /// the successor is gone. Context: control. @return kFailed / kConflict naming the port
    Status reclaim_ports();

    /// Names and slots of every port, by name. Context: control.
    std::vector<std::pair<std::string, uint16_t>> port_slots() const;
    /// A port's MAC address as port.list shows it ("" when unknown). Context: control.
    std::string port_mac_text(const std::string& name) const;
    /// The learned MACs (the control thread is their only writer) and the clock their stamps
    /// use, in seconds. Context: control.
    MacTable& mac_table() { return *macs_; }
    uint32_t clock_s() const { return clock_s_.load(std::memory_order_relaxed); }

    /// A MAC a vhost-user port's link down forgot: its device stopped, perhaps for a QEMU
    /// migration that asks for the port's state next (migrate/inband_migration.h).
    struct DepartedMac {
        uint64_t key;  // the MAC table's key (address and VLAN)
        uint32_t stamp_s;
    };
    /// The MACs the port in slot forgot at its last link down; empty once it is up again.
    /// Context: control.
    std::vector<DepartedMac> departed_macs(uint16_t slot) const;

    /// The configuration the switch was built from. Context: control.
    const Config& config() const { return cfg_; }

    /// Runs task on the control thread soon, from its event loop. Context: any thread.
    void post(std::function<void()> task);

    void request_shutdown() { shutdown_.store(true); }
    bool shutdown_requested() const { return shutdown_.load(); }
    uint16_t worker_count() const { return static_cast<uint16_t>(workers_.size()); }
    unsigned first_worker_lcore() const { return workers_.front()->lcore; }

private:
    struct PortRecord {
        PortConfig cfg;
        PortDevice dev;
        uint16_t slot = 0;
        bool link_up = false;
        std::vector<uint16_t> rx_worker;  // worker index polling each rx queue
        PortCounters baseline{};          // counters the slot held before this port took it
    };

    explicit Switch(const Config& cfg);
    Status init();
    Status init_rules();
    /// Parks one worker (bounded wait) / lets it go. Context: control.
    Status pause_worker(WorkerState* w);
    void resume_worker(WorkerState* w);
    void release_worker(WorkerState* w);
    /// Closes every port's device and forgets the records (workers stopped). Context: control.
    void close_ports();
    /// Builds a new PortTable from the records, publishes it and frees the old one after a
    /// grace period. Context: control.
    void publish();
    PortCounters sum_port_counters(uint16_t slot) const;
    nlohmann::json describe(const PortRecord& r) const;
    const PortRecord* find(const std::string& name) const;
    void drain_learn_events();
    void age_macs();
    void drain_addresses(uint32_t now_s);  // the workers' address reports into addresses_
    void poll_links();
    static void on_port_event(void* self);

    Config cfg_;
    rte_mempool* pool_ = nullptr;
    rte_rcu_qsbr* qsbr_ = nullptr;
    MacTable* macs_ = nullptr;
    std::vector<WorkerState*> workers_;
    std::vector<std::unique_ptr<FlowCache>> flow_caches_;   // one per worker
    std::vector<std::vector<RuleCounters>> rule_counters_;  // one array per worker
    std::vector<std::unique_ptr<MeterSet>> meters_;         // one set per worker
    std::unique_ptr<RuleTable> rules_;
    std::unique_ptr<ConntrackControl> ct_;
    std::unique_ptr<DpiControl> dpi_;  // after ct_: its streams follow the shards' connections
    OffloadSync offload_;              // NIC flow rules of every port
    std::atomic<const PortTable*> table_{nullptr};
    std::atomic<uint32_t> clock_s_{0};
    std::atomic<uint64_t> generation_{0};  // atomics: the telemetry thread reads these two
    uint64_t start_tsc_ = 0;
    uint32_t last_age_s_ = 0;
    uint32_t last_link_poll_s_ = 0;
    std::atomic<uint64_t> mac_table_full_{0};
    bool workers_started_ = false;
    unsigned pause_depth_ = 0;  // pause() calls not yet matched by resume()
    std::mutex posted_mutex_;   // guards posted_ (any thread adds, the control thread runs)
    std::vector<std::function<void()>> posted_;
    int event_fd_ = -1;
    std::atomic<bool> events_pending_{false};
    std::atomic<bool> shutdown_{false};
    // Guards ports_ against DPDK's telemetry thread, which reads it; the control thread is
    // the only writer. Never taken by a worker.
    mutable std::mutex registry_mutex_;
    std::map<std::string, PortRecord> ports_;
    std::vector<std::pair<uint16_t, PortConfig>> released_;       // by release_ports(): slot, port
    std::map<uint16_t, std::vector<DepartedMac>> departed_macs_;  // by slot; control thread only
    ObservedAddresses addresses_;  // what ports with security were seen sending from; control
};

}  // namespace ferry
