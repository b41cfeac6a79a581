// The switch as the migration drivers see it (migrate/host.h): a thin view of a Switch that
// forwards each call. Context: as each MigrationHost method says.
#pragma once

#include "migrate/host.h"
#include "migrate/takeover.h"

namespace ferry {

class ControlServer;
class Switch;

class SwitchMigrationHost final : public MigrationHost {
public:
    explicit SwitchMigrationHost(Switch& sw) : sw_(sw) {}

    void post(std::function<void()> task) override;
    Pauser& workers() override;
    std::vector<std::pair<std::string, uint16_t>> port_slots() const override;
    std::optional<uint16_t> port_slot(const std::string& name) const override;
    std::string port_mac_text(const std::string& name) const override;
    std::vector<DepartedMac> departed_macs(uint16_t slot) const override;
    std::vector<MigratedAddress> port_addresses(const std::string& name) override;
    size_t learn_port_addresses(const std::string& name,
                                const std::vector<MigratedAddress>& addresses) override;
    MacTable& mac_table() override;
    uint32_t clock_s() const override;
    uint16_t ct_shard_count() const override;
    ConntrackShard& ct_shard(uint16_t worker) override;
    CtZoneTable& ct_zones() override;
    uint64_t ct_now_ms() const override;
    std::string ct_tuple_text(const CtTuple& t) const override;
    DpiVersion& dpi_current() override;
    DpiWorker& dpi_worker(uint16_t worker) override;
    /// Lines go to ferryd's log under the `migrate` subsystem (its level applies).
    void log_line(MigrateLog level, const std::string& line) override;

    Switch& sw() { return sw_; }

private:
    Switch& sw_;
};

/// The rest of ferryd as the live upgrade's running side sees it (migrate/takeover.h): the
/// switch's ports, the control server's socket, the service manager.
class SwitchTakeoverHost final : public TakeoverHost {
public:
    SwitchTakeoverHost(Switch& sw, ControlServer& server) : sw_(sw), server_(server) {}

    void watch(int fd, bool writable, std::function<void()> on_ready) override;
    void unwatch(int fd) override;
    void hold_control_requests(bool hold) override;
    int control_socket_fd() const override;
    void control_socket_handed_over() override;
    void release_ports(std::vector<HandedConnection>* handed) override;
    Status reclaim_ports() override;
    void request_shutdown() override;
    void notify_service_manager(const std::string& state) override;

private:
    Switch& sw_;
    ControlServer& server_;
};

}  // namespace ferry
