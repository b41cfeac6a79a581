// What the control methods read, as JSON: a port's description (port.list, port.add's answer),
// its counters (port.stats) and security, one worker's flow cache (flow.dump) and the
// switch's own counters (stats).
#include "control/switch.h"

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <map>

#include "control/device_counters.h"
#include "control/mac_text.h"
#include "dataplane/classifier.h"
#include "dataplane/flow_cache.h"
#include "dataplane/mac_table.h"

namespace ferry {
namespace {

/// Adds one worker's counters of a port slot into a sum. Context: control.
void add_counters(PortCounters& into, const PortCounters& c) {
    for (const PortCounterInfo& k : kPortCounters) into.*k.field += counter_read(c.*k.field);
    for (size_t i = 0; i < kDropReasonCount; ++i) into.drops[i] += counter_read(c.drops[i]);
}

/// The EAL's --file-prefix: the last component of its runtime directory. Context: any.
std::string eal_file_prefix() {
    const std::string dir = rte_eal_get_runtime_dir();
    const size_t slash = dir.rfind('/');
    return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

}  // namespace

nlohmann::json Switch::describe(const PortRecord& r) const {
    nlohmann::json j;
    j["name"] = r.cfg.name;
    j["type"] = r.cfg.type == PortType::kVhostUser ? "vhost-user" : "dpdk";
    j["state"] = r.link_up ? "up" : "down";
    j["link"] = r.link_up ? "up" : "down";
    j["slot"] = r.slot;
    j["dpdk_port"] = r.dev.dpdk_port;
    j["device"] = r.dev.dev_name;
    j["queues"] = r.cfg.queues;
    j["mtu"] = r.cfg.mtu;
    if (r.cfg.type == PortType::kVhostUser) {
        j["path"] = r.cfg.path;
        j["mode"] = r.cfg.mode == VhostMode::kServer ? "server" : "client";
    } else {
        j["devargs"] = r.cfg.devargs;
    }
    j["mac"] = port_mac(r.dev.dpdk_port);
    j["vlan_mode"] = r.cfg.vlan_mode == VlanMode::kAccess ? "access" : "trunk";
    j["tag"] = r.cfg.tag;
    if (!r.cfg.trunks.empty()) j["trunks"] = r.cfg.trunks;
    if (r.cfg.security) j["security"] = port_security_json(*r.cfg.security);
    nlohmann::json rx = nlohmann::json::array();
    for (uint16_t wi : r.rx_worker) rx.push_back(cfg_.workers[wi]);
    j["rx_lcores"] = rx;
    return j;
}

nlohmann::json Switch::port_list() const {
    std::lock_guard lock(registry_mutex_);
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [n, r] : ports_) out.push_back(describe(r));
    return out;
}

PortCounters Switch::sum_port_counters(uint16_t slot) const {
    PortCounters sum{};
    for (const WorkerState* w : workers_) add_counters(sum, w->port_counters[slot]);
    return sum;
}

Result<nlohmann::json> Switch::port_stats(const std::string& name) const {
    std::lock_guard lock(registry_mutex_);
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [n, r] : ports_) {
        if (!name.empty() && n != name) continue;
        PortCounters c = sum_port_counters(r.slot);
        nlohmann::json j;
        j["name"] = n;
        for (const PortCounterInfo& k : kPortCounters)
            j[std::string(k.name)] = c.*k.field - r.baseline.*k.field;
        nlohmann::json drops = nlohmann::json::object();
        for (size_t i = 0; i < kDropReasonCount; ++i)
            drops[std::string(kDropReasons[i].name)] = c.drops[i] - r.baseline.drops[i];
        j["drops"] = drops;
        rte_eth_stats es{};
        if (rte_eth_stats_get(r.dev.dpdk_port, &es) == 0) {
            nlohmann::json device = nlohmann::json::object();
            for (const DeviceCounterInfo& k : kDeviceCounters)
                device[std::string(k.name)] = es.*k.field;
            j["device"] = device;
        }
        out.push_back(j);
    }
    if (!name.empty() && out.empty())
        return make_error(ErrorCode::kNotFound, "no port named " + name);
    return out;
}

Result<nlohmann::json> Switch::port_security(const std::string& name) const {
    std::lock_guard lock(registry_mutex_);
    auto it = ports_.find(name);
    if (it == ports_.end()) return make_error(ErrorCode::kNotFound, "no port named " + name);
    const auto& sec = it->second.cfg.security;
    return nlohmann::json{{"name", name},
                          {"security", sec ? port_security_json(*sec) : nlohmann::json(nullptr)}};
}

Result<nlohmann::json> Switch::flow_dump(unsigned lcore, size_t limit) {
    auto it = std::find_if(workers_.begin(), workers_.end(),
                           [lcore](const WorkerState* w) { return w->lcore == lcore; });
    if (it == workers_.end())
        return make_error(ErrorCode::kNotFound,
                          "lcore " + std::to_string(lcore) + " is not a worker");
    WorkerState* w = *it;
    std::map<uint16_t, std::string> slot_names;
    for (const auto& [n, r] : ports_) slot_names[r.slot] = n;
    const Classifier* cls = rules_->published()->load();
    uint64_t gen = cls->generation();
    nlohmann::json entries = nlohmann::json::array();
    // Slices of 256 buckets keep each pause of the worker to a few microseconds.
    constexpr uint32_t kSlice = 256;
    uint32_t next = 0;
    do {
        Status st = pause_worker(w);
        if (!st) return st.error();
        next = w->flow_cache->dump(
            gen, next, kSlice,
            [&](const FlowKey& k, uint8_t table, const CompiledRule* r, uint64_t hits) {
                if (entries.size() >= limit) return;
                auto port = slot_names.find(k.in_port);
                entries.push_back({{"in_port", port == slot_names.end() ? "?" : port->second},
                                   {"eth_src", format_mac(mac_key(k.eth_src, 0))},
                                   {"eth_dst", format_mac(mac_key(k.eth_dst, 0))},
                                   {"eth_type", k.ethertype},
                                   {"ip_proto", k.ip_proto},
                                   {"l4_src", k.l4_src},
                                   {"l4_dst", k.l4_dst},
                                   {"table", table},
                                   {"rule_slot", r == nullptr ? nlohmann::json(nullptr)
                                                              : nlohmann::json(r->index)},
                                   {"hits", hits}});
            });
        resume_worker(w);
    } while (next != 0 && entries.size() < limit);
    auto st = w->flow_cache->stats();
    return nlohmann::json{{"lcore", lcore},
                          {"generation", gen},
                          {"capacity", w->flow_cache->capacity()},
                          {"hits", st.hits},
                          {"misses", st.misses},
                          {"evictions", st.evictions},
                          {"revalidated", st.revalidated},
                          {"entries", entries}};
}

nlohmann::json Switch::stats() const {
    nlohmann::json workers = nlohmann::json::array();
    for (const WorkerState* w : workers_) {
        nlohmann::json one{{"lcore", w->lcore}};
        for (const WorkerCounterInfo& k : kWorkerCounters)
            one[std::string(k.name)] = counter_read(w->counters.*k.field);
        const uint64_t pk = one["packets"].get<uint64_t>();
        one["cycles_per_packet"] = pk == 0 ? 0 : one["busy_cycles"].get<uint64_t>() / pk;
        workers.push_back(std::move(one));
    }
    std::lock_guard lock(registry_mutex_);
    return {
        {"uptime_s", (rte_get_tsc_cycles() - start_tsc_) / rte_get_tsc_hz()},
        {"workers", workers},
        {"ports", ports_.size()},
        {"macs", macs_->size()},
        {"mac_capacity", macs_->capacity()},
        {"mac_table_full", mac_table_full_.load()},
        {"mbufs_in_use", rte_mempool_in_use_count(pool_)},
        {"table_generation", generation_.load()},
        {"rules", rules_->size()},
        {"rule_generation", rules_->generation()},
        // What a DPDK secondary process (dpdk-dumpcap, dpdk-proc-info) needs to attach.
        {"eal", {{"file_prefix", eal_file_prefix()}, {"hugepages", rte_eal_has_hugepages() != 0}}}};
}

}  // namespace ferry
