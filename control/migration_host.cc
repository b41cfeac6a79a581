#include "control/migration_host.h"

#include "control/control_server.h"
#include "control/ct_control.h"
#include "control/dpi_control.h"
#include "control/log.h"
#include "control/sd_notify.h"
#include "control/switch.h"
#include "migrate/migration_state.h"

namespace ferry {

void SwitchMigrationHost::post(std::function<void()> task) {
    sw_.post(std::move(task));
}

Pauser& SwitchMigrationHost::workers() {
    return sw_;
}

std::vector<std::pair<std::string, uint16_t>> SwitchMigrationHost::port_slots() const {
    return sw_.port_slots();
}

std::optional<uint16_t> SwitchMigrationHost::port_slot(const std::string& name) const {
    return sw_.port_slot(name);
}

std::string SwitchMigrationHost::port_mac_text(const std::string& name) const {
    return sw_.port_mac_text(name);
}

std::vector<MigrationHost::DepartedMac> SwitchMigrationHost::departed_macs(uint16_t slot) const {
    std::vector<DepartedMac> out;
    for (const Switch::DepartedMac& d : sw_.departed_macs(slot)) out.push_back({d.key, d.stamp_s});
    return out;
}

std::vector<MigratedAddress> SwitchMigrationHost::port_addresses(const std::string& name) {
    // The stream's flags are its own (docs/migration-stream.md), never PortAddressFlag's bits.
    std::vector<MigratedAddress> out;
    for (const PortAddress& a : sw_.port_address_list(name)) {
        MigratedAddress m;
        m.family = a.family;
        m.prefix_length = a.prefix_len;
        m.address = a.ip;
        if (a.flags & kPortAddrConfigured) m.flags |= kAddrConfigured;
        if (a.flags & kPortAddrObserved) m.flags |= kAddrLearned;
        if (a.flags & kPortAddrLinkLocal) m.flags |= kAddrLinkLocal;
        out.push_back(m);
    }
    return out;
}

size_t SwitchMigrationHost::learn_port_addresses(const std::string& name,
                                                 const std::vector<MigratedAddress>& addresses) {
    // Only what the source saw the guest use: the configured ones are this switch's to say.
    std::vector<std::pair<uint8_t, Switch::IpBytes>> seen;
    for (const MigratedAddress& a : addresses)
        if (a.flags & kAddrLearned) seen.emplace_back(a.family, a.address);
    return seen.empty() ? 0 : sw_.note_port_addresses(name, seen);
}

MacTable& SwitchMigrationHost::mac_table() {
    return sw_.mac_table();
}

uint32_t SwitchMigrationHost::clock_s() const {
    return sw_.clock_s();
}

uint16_t SwitchMigrationHost::ct_shard_count() const {
    return static_cast<uint16_t>(sw_.conntrack().shard_count());
}

ConntrackShard& SwitchMigrationHost::ct_shard(uint16_t worker) {
    return sw_.conntrack().shard(worker);
}

CtZoneTable& SwitchMigrationHost::ct_zones() {
    return sw_.conntrack().zones();
}

uint64_t SwitchMigrationHost::ct_now_ms() const {
    return sw_.conntrack().now_ms();
}

std::string SwitchMigrationHost::ct_tuple_text(const CtTuple& t) const {
    return ferry::ct_tuple_text(t);
}

DpiVersion& SwitchMigrationHost::dpi_current() {
    return sw_.dpi().current();
}

DpiWorker& SwitchMigrationHost::dpi_worker(uint16_t worker) {
    return sw_.dpi().worker(worker);
}

void SwitchTakeoverHost::watch(int fd, bool writable, std::function<void()> on_ready) {
    if (Status s = server_.add_watch(fd, std::move(on_ready), writable); !s)
        log_in(LogSubsystem::kMigrate, LogLevel::kError, "takeover: %s", s.error().message.c_str());
}

void SwitchTakeoverHost::unwatch(int fd) {
    server_.remove_watch(fd);
}

void SwitchTakeoverHost::hold_control_requests(bool hold) {
    server_.hold_requests(hold);
}

int SwitchTakeoverHost::control_socket_fd() const {
    return server_.listen_fd();
}

void SwitchTakeoverHost::control_socket_handed_over() {
    server_.hand_over();
}

void SwitchTakeoverHost::release_ports(std::vector<HandedConnection>* handed) {
    sw_.release_ports(handed);
}

Status SwitchTakeoverHost::reclaim_ports() {
    return sw_.reclaim_ports();
}

void SwitchTakeoverHost::request_shutdown() {
    sw_.request_shutdown();
}

void SwitchTakeoverHost::notify_service_manager(const std::string& state) {
    ferry::notify_service_manager(state);
}

void SwitchMigrationHost::log_line(MigrateLog level, const std::string& line) {
    static_assert(static_cast<int>(MigrateLog::kError) == static_cast<int>(LogLevel::kError));
    const auto lvl = static_cast<LogLevel>(level);
    if (log_enabled(LogSubsystem::kMigrate, lvl))
        log_in(LogSubsystem::kMigrate, lvl, "%s", line.c_str());
}

}  // namespace ferry
