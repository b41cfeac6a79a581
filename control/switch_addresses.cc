// The addresses ports' guests are seen sending from (ports with port security), kept by the
// control thread: draining what the workers report over their rings, listing them (port.addresses,
// a migration's capture) and recording those a migration brought along.
#include "control/switch.h"

namespace ferry {

void Switch::drain_addresses(uint32_t now_s) {
    std::vector<rte_ring*> rings;
    for (WorkerState* w : workers_) rings.push_back(w->address_ring);
    addresses_.drain(rings, now_s);
}

Result<nlohmann::json> Switch::port_addresses(const std::string& name) const {
    std::lock_guard lock(registry_mutex_);
    auto it = ports_.find(name);
    if (it == ports_.end()) return make_error(ErrorCode::kNotFound, "no port named " + name);
    const uint32_t now = clock_s_.load(std::memory_order_relaxed);
    nlohmann::json list = nlohmann::json::array();
    for (const PortAddress& a : addresses_.list(it->second.slot, it->second.cfg.security))
        list.push_back(port_address_json(a, now));
    return nlohmann::json{{"name", name}, {"addresses", std::move(list)}};
}

std::vector<PortAddress> Switch::port_address_list(const std::string& name) {
    drain_addresses(clock_s_.load(std::memory_order_relaxed));
    std::lock_guard lock(registry_mutex_);
    const PortRecord* r = find(name);
    return r == nullptr ? std::vector<PortAddress>{} : addresses_.list(r->slot, r->cfg.security);
}

size_t Switch::note_port_addresses(const std::string& name,
                                   const std::vector<std::pair<uint8_t, IpBytes>>& seen) {
    std::lock_guard lock(registry_mutex_);
    const PortRecord* r = find(name);
    if (r == nullptr) return 0;
    std::optional<PortSecurity> sec;
    if (r->cfg.security) {
        auto compiled = compile_port_security(*r->cfg.security, "security");
        if (!compiled) return 0;  // refused when it was set: cannot happen
        sec = *compiled;
    }
    const uint32_t now = clock_s_.load(std::memory_order_relaxed);
    size_t n = 0;
    for (const auto& [family, ip] : seen) {
        if (sec && !port_security_source_allowed(*sec, family, ip.data())) continue;
        addresses_.note(r->slot, family, ip, now);
        ++n;
    }
    return n;
}

}  // namespace ferry
