// The port registry: adding and removing ports (queue placement, slots), changing a port's
// security, closing and reopening every port around a live upgrade, looking ports up, and
// publishing the port table the workers read (the one writer, an RCU grace period before the old
// table is freed).
#include "control/switch.h"

#include <rte_rcu_qsbr.h>

#include <algorithm>

#include "control/log.h"
#include "control/migration_host.h"
#include "control/vhost_handover.h"
#include "dataplane/mac_table.h"
#include "migrate/inband_migration.h"

namespace ferry {

void Switch::publish() {
    auto* t = new PortTable();
    t->generation = ++generation_;
    for (const auto& [name, r] : ports_) {
        PortSlot& s = t->ports[r.slot];
        s.active = true;
        s.link_up = r.link_up;
        s.dpdk_port = r.dev.dpdk_port;
        s.vlan_mode =
            r.cfg.vlan_mode == VlanMode::kAccess ? PortVlanMode::kAccess : PortVlanMode::kTrunk;
        s.tag = r.cfg.tag;
        s.mtu = r.cfg.mtu;
        if (s.vlan_mode == PortVlanMode::kTrunk) {
            if (r.cfg.trunks.empty()) {
                s.trunks.set();
                s.trunks.reset(0);
                s.trunks.reset(kVlanIds - 1);
            }
            for (uint16_t v : r.cfg.trunks) s.trunks.set(v);
        }
        if (r.cfg.security) {
            // Validated when set; should it still not compile, the port sends nothing (closed,
            // not open).
            auto sec = compile_port_security(*r.cfg.security, "security");
            s.security = sec ? *sec : PortSecurity{.enabled = true};
        }
        t->port_limit = std::max<uint16_t>(t->port_limit, r.slot + 1);
        for (size_t q = 0; q < r.rx_worker.size(); ++q) {
            uint16_t wi = r.rx_worker[q];
            t->rx[wi][t->rx_count[wi]++] = RxAssignment{r.slot, static_cast<uint16_t>(q)};
        }
    }
    // Release: pairs with the workers' acquire load, so the table is complete when seen.
    const PortTable* old = table_.exchange(t, std::memory_order_acq_rel);
    if (old != nullptr) {
        // Every worker passes a quiescent state after its last use of the old table.
        rte_rcu_qsbr_synchronize(qsbr_, RTE_QSBR_THRID_INVALID);
        delete old;
    }
}

std::optional<uint16_t> Switch::port_slot(const std::string& name) const {
    const PortRecord* r = find(name);
    if (r == nullptr) return std::nullopt;
    return r->slot;
}

std::string Switch::port_name(uint16_t slot) const {
    for (const auto& [name, rec] : ports_)
        if (rec.slot == slot) return name;
    std::string text = std::to_string(slot);
    text.insert(text.begin(), '#');
    return text;
}

void Switch::close_ports() {
    std::lock_guard lock(registry_mutex_);
    for (auto& [name, rec] : ports_) {
        offload_.remove_port(rec.slot);
        port_device_close(rec.dev);
        if (rec.cfg.type == PortType::kVhostUser) inband_remove_port(rec.cfg.path);
    }
    ports_.clear();
}

void Switch::release_ports(std::vector<HandedConnection>* handed) {
    released_.clear();
    for (const auto& [name, rec] : ports_) released_.emplace_back(rec.slot, rec.cfg);
    stop_workers();
    // The rings' indexes are final now that no worker runs.
    for (const auto& [name, rec] : ports_) {
        if (handed == nullptr || rec.cfg.type != PortType::kVhostUser) continue;
        const std::vector<int> vids = vhost_connections(rec.cfg.path);
        if (vids.size() != 1) continue;  // no front-end connected
        auto h = vhost_handover_capture(rec.cfg.path, vids[0], rec.cfg.mode == VhostMode::kServer);
        if (h) {
            handed->push_back(std::move(*h));
            FERRY_LOG_INFO_IN(kPort, "port %s: vhost-user connection handed to the successor",
                              name.c_str());
        } else {
            FERRY_LOG_WARN_IN(kPort, "port %s: %s", name.c_str(), h.error().message.c_str());
        }
    }
    close_ports();
    publish();
}

Status Switch::reclaim_ports() {
    // Each port in its old slot: connections, rules and MACs name ports by slot.
    std::vector<std::pair<uint16_t, PortConfig>> ports = std::move(released_);
    released_.clear();
    for (const auto& [slot, cfg] : ports)
        if (auto added = add_port(cfg, slot); !added)
            return make_error(added.error().code,
                              "port " + cfg.name + ": " + added.error().message);
    return start_workers();
}

std::vector<std::pair<std::string, uint16_t>> Switch::port_slots() const {
    std::vector<std::pair<std::string, uint16_t>> out;
    for (const auto& [name, rec] : ports_) out.emplace_back(name, rec.slot);
    return out;
}

std::string Switch::port_mac_text(const std::string& name) const {
    const PortRecord* r = find(name);
    return r == nullptr ? std::string() : port_mac(r->dev.dpdk_port);
}

const Switch::PortRecord* Switch::find(const std::string& name) const {
    auto it = ports_.find(name);
    return it == ports_.end() ? nullptr : &it->second;
}

Result<nlohmann::json> Switch::add_port(const PortConfig& cfg, std::optional<uint16_t> slot) {
    if (find(cfg.name) != nullptr)
        return make_error(ErrorCode::kConflict, "port " + cfg.name + " already exists");
    std::vector<bool> used(kPortSlots, false);
    for (const auto& [n, r] : ports_) {
        used[r.slot] = true;
        if (cfg.type == PortType::kVhostUser && r.cfg.type == PortType::kVhostUser &&
            r.cfg.path == cfg.path)
            return make_error(ErrorCode::kConflict,
                              "port " + n + " already uses socket " + cfg.path);
    }
    if (slot && (*slot >= kPortSlots || used[*slot]))
        return make_error(ErrorCode::kConflict, "slot " + std::to_string(*slot) + " is in use");
    auto free_slot = slot ? used.begin() + *slot : std::find(used.begin(), used.end(), false);
    if (free_slot == used.end())
        return make_error(ErrorCode::kConflict, "all 64 port slots are in use");
    PortRecord rec;
    rec.cfg = cfg;
    rec.slot = static_cast<uint16_t>(free_slot - used.begin());
    // Queue placement is decided once: moving a queue between running workers could let two
    // lcores poll it at the same time.
    std::vector<unsigned> load(workers_.size(), 0);
    for (const auto& [n, r] : ports_)
        for (uint16_t wi : r.rx_worker) ++load[wi];
    for (uint16_t q = 0; q < cfg.queues; ++q) {
        uint16_t wi = 0;
        if (!cfg.rx_pin.empty()) {
            auto it = std::find(cfg_.workers.begin(), cfg_.workers.end(), cfg.rx_pin[q]);
            if (it == cfg_.workers.end())
                return make_error(ErrorCode::kInvalidParams,
                                  "rx_pin[" + std::to_string(q) + "]: lcore " +
                                      std::to_string(cfg.rx_pin[q]) + " is not a worker");
            wi = static_cast<uint16_t>(it - cfg_.workers.begin());
        } else {
            wi = static_cast<uint16_t>(std::min_element(load.begin(), load.end()) - load.begin());
        }
        if (load[wi] >= kRxPerWorker)
            return make_error(ErrorCode::kConflict, "worker " + std::to_string(cfg_.workers[wi]) +
                                                        " already polls 64 queues");
        ++load[wi];
        rec.rx_worker.push_back(wi);
    }
    // Known to in-band migration before the device exists: its first events attach to it.
    const bool vhost = cfg.type == PortType::kVhostUser;
    if (vhost) inband_add_port(std::make_shared<SwitchMigrationHost>(*this), cfg.name, cfg.path);
    auto dev = port_device_open(cfg, worker_count(), pool_, &Switch::on_port_event, this);
    if (!dev) {
        if (vhost) inband_remove_port(cfg.path);
        return dev.error();
    }
    rec.dev = dev.value();
    rec.link_up = port_link_up(rec.dev.dpdk_port);
    offload_.add_port(rec.slot, rec.dev.dpdk_port);
    rec.baseline = sum_port_counters(rec.slot);
    nlohmann::json desc;
    {
        std::lock_guard lock(registry_mutex_);
        auto [it, ok] = ports_.emplace(cfg.name, std::move(rec));
        desc = describe(it->second);
    }
    publish();
    FERRY_LOG_INFO("port %s added (%s, slot %s, link %s)", cfg.name.c_str(),
                   desc["device"].get<std::string>().c_str(), desc["slot"].dump().c_str(),
                   desc["link"].get<std::string>().c_str());
    return desc;
}

Status Switch::del_port(const std::string& name) {
    const PortRecord* r = find(name);
    if (r == nullptr) return make_error(ErrorCode::kNotFound, "no port named " + name);
    std::vector<uint64_t> users = rules_->rules_using_port(r->slot);
    if (!users.empty()) {
        std::string ids;
        for (uint64_t id : users) ids += (ids.empty() ? "" : ", ") + std::to_string(id);
        return make_error(ErrorCode::kConflict,
                          "port " + name + " is used by rules " + ids + "; delete them first");
    }
    PortRecord rec;
    {
        std::lock_guard lock(registry_mutex_);
        auto it = ports_.find(name);
        rec = std::move(it->second);
        ports_.erase(it);
    }
    publish();  // returns after every worker has stopped using the port
    offload_.remove_port(rec.slot);
    port_device_close(rec.dev);
    if (rec.cfg.type == PortType::kVhostUser) inband_remove_port(rec.cfg.path);
    departed_macs_.erase(rec.slot);
    addresses_.forget(rec.slot);
    uint32_t n = macs_->remove_if([&](uint64_t, MacEntry e) { return e.port == rec.slot; });
    FERRY_LOG_INFO("port %s removed (%u MAC entries forgotten)", name.c_str(), n);
    return Ok{};
}

Result<nlohmann::json> Switch::set_port_security(const std::string& name,
                                                 std::optional<PortSecurityConfig> security) {
    if (security) {
        auto compiled = compile_port_security(*security, "security");
        if (!compiled) return compiled.error();
    }
    const bool security_on = security.has_value();
    {
        std::lock_guard lock(registry_mutex_);
        auto it = ports_.find(name);
        if (it == ports_.end()) return make_error(ErrorCode::kNotFound, "no port named " + name);
        it->second.cfg.security = std::move(security);
    }
    publish();  // returns once every worker checks the new addresses
    FERRY_LOG_INFO("port %s: port security %s", name.c_str(), security_on ? "on" : "off");
    return port_security(name);
}

}  // namespace ferry
