// The MAC table from the control thread's side, its only writer: learning what the workers
// report over their rings, aging, listing (mac.list) and flushing (mac.flush), and the MACs a
// vhost-user port's link down set aside for its migration.
#include "control/switch.h"

#include <rte_ring.h>

#include <algorithm>
#include <tuple>

#include "control/log.h"
#include "control/mac_text.h"
#include "dataplane/mac_table.h"

namespace ferry {

void Switch::drain_learn_events() {
    uint32_t now = clock_s_.load(std::memory_order_relaxed);
    const PortTable* t = table_.load(std::memory_order_acquire);
    LearnEvent evs[64];
    for (WorkerState* w : workers_) {
        unsigned n;
        while ((n = rte_ring_sc_dequeue_burst_elem(w->learn_ring, evs, sizeof(LearnEvent), 64,
                                                   nullptr)) != 0) {
            for (unsigned i = 0; i < n; ++i) {
                if (evs[i].port >= kPortSlots || !t->ports[evs[i].port].active) continue;
                MacEntry old{};
                bool known = macs_->get(evs[i].key, &old);
                if (known && old.port != evs[i].port)
                    FERRY_LOG_DEBUG("mac %s vlan %u moved from slot %u to slot %u",
                                    format_mac(mac_key_addr(evs[i].key)).c_str(),
                                    mac_key_vlan(evs[i].key), old.port, evs[i].port);
                if (!macs_->upsert(evs[i].key, MacEntry{evs[i].port, now})) ++mac_table_full_;
            }
        }
    }
}

void Switch::age_macs() {
    uint32_t now = clock_s_.load(std::memory_order_relaxed);
    uint32_t limit = cfg_.mac_aging_s;
    macs_->remove_if([&](uint64_t, MacEntry e) { return now - e.stamp_s > limit; });
}

Result<nlohmann::json> Switch::mac_list(const std::string& port,
                                        std::optional<uint16_t> vlan) const {
    std::map<uint16_t, std::string> slot_names;
    for (const auto& [n, r] : ports_) slot_names[r.slot] = n;
    std::optional<uint16_t> slot;
    if (!port.empty()) {
        const PortRecord* r = find(port);
        if (r == nullptr) return make_error(ErrorCode::kNotFound, "no port named " + port);
        slot = r->slot;
    }
    uint32_t now = clock_s_.load();
    nlohmann::json out = nlohmann::json::array();
    macs_->for_each([&](uint64_t key, MacEntry e) {
        if (slot && e.port != *slot) return;
        if (vlan && mac_key_vlan(key) != *vlan) return;
        auto it = slot_names.find(e.port);
        out.push_back({{"mac", format_mac(mac_key_addr(key))},
                       {"vlan", mac_key_vlan(key)},
                       {"port", it == slot_names.end() ? std::string("?") : it->second},
                       {"age_s", now - e.stamp_s}});
    });
    std::sort(out.begin(), out.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
        return std::tie(a["vlan"], a["mac"]) < std::tie(b["vlan"], b["mac"]);
    });
    return out;
}

Result<nlohmann::json> Switch::mac_flush(const std::string& port) {
    std::optional<uint16_t> slot;
    if (!port.empty()) {
        const PortRecord* r = find(port);
        if (r == nullptr) return make_error(ErrorCode::kNotFound, "no port named " + port);
        slot = r->slot;
    }
    uint32_t n = macs_->remove_if([&](uint64_t, MacEntry e) { return !slot || e.port == *slot; });
    return nlohmann::json{{"flushed", n}};
}

std::vector<Switch::DepartedMac> Switch::departed_macs(uint16_t slot) const {
    auto it = departed_macs_.find(slot);
    return it == departed_macs_.end() ? std::vector<DepartedMac>{} : it->second;
}

}  // namespace ferry
