#include "control/offload_sync.h"

#include <algorithm>
#include <set>

#include "control/offload/flow_translate.h"

namespace ferry {
namespace {

// Refusals after which a port stops trying: devices without flow support refuse every rule,
// and checking overlaps against an ever longer list of refused rules would cost O(n^2).
constexpr size_t kMaxRefusals = 256;

bool applies_to(const OffloadCandidate& c, uint16_t port_slot) {
    const CompiledRule& e = c.entries->front();
    return e.mask.in_port == 0 || e.value.in_port == port_slot;
}

bool overlaps(const OffloadCandidate& a, const OffloadCandidate& b) {
    for (const CompiledRule& x : *a.entries)
        for (const CompiledRule& y : *b.entries)
            if (rules_overlap(x, y)) return true;
    return false;
}

}  // namespace

void OffloadSync::add_port(uint16_t port_slot, uint16_t dpdk_port) {
    Port p;
    p.slot = port_slot;
    p.mgr = std::make_unique<OffloadManager>(dpdk_port);
    ports_[port_slot] = std::move(p);
}

void OffloadSync::remove_port(uint16_t port_slot) {
    ports_.erase(port_slot);
}

void OffloadSync::sync(const std::vector<OffloadCandidate>& rules) {
    std::vector<OffloadCandidate> ordered = rules;
    std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) {
        return a.priority != b.priority ? a.priority > b.priority : a.slot < b.slot;
    });
    std::set<int32_t, std::greater<>> distinct;
    for (const auto& c : ordered) distinct.insert(c.priority);
    std::vector<int32_t> priorities(distinct.begin(), distinct.end());
    for (auto& [slot, p] : ports_) sync_port(p, ordered, priorities);
}

void OffloadSync::sync_port(Port& p, const std::vector<OffloadCandidate>& ordered,
                            const std::vector<int32_t>& priorities) {
    // Ranks are positions among the distinct priorities: when they shift, every flow's rte_flow
    // priority is stale, so start over.
    if (priorities != p.priorities) {
        p.mgr->clear();
        p.installed.clear();
        p.priorities = priorities;
    }
    std::set<uint32_t> wanted;
    for (const auto& c : ordered)
        if (applies_to(c, p.slot)) wanted.insert(c.slot);
    for (auto it = p.installed.begin(); it != p.installed.end();) {
        if (wanted.count(it->first) == 0) {
            p.mgr->remove(it->first);
            it = p.installed.erase(it);
        } else {
            ++it;
        }
    }
    std::vector<const OffloadCandidate*> refused;  // higher-priority rules left in software
    for (const auto& c : ordered) {
        if (!applies_to(c, p.slot)) continue;
        auto done = p.installed.find(c.slot);
        if (done != p.installed.end()) {
            if (!done->second) refused.push_back(&c);
            continue;
        }
        bool shadowed = refused.size() >= kMaxRefusals ||
                        std::any_of(refused.begin(), refused.end(),
                                    [&](const OffloadCandidate* r) { return overlaps(*r, c); });
        bool ok = false;
        if (!shadowed) {
            uint32_t rank = priority_rank(c.priority, priorities);
            // Mark = slot + 1: some drivers reserve mark 0.
            ok = p.mgr->install(c.slot, *c.entries, c.slot + 1, rank).ok();
        }
        p.installed[c.slot] = ok;
        if (!ok) refused.push_back(&c);
    }
}

std::string OffloadSync::state(uint32_t slot) const {
    bool any = false;
    for (const auto& [port_slot, p] : ports_) {
        auto it = p.installed.find(slot);
        if (it == p.installed.end()) continue;
        any = true;
        if (!it->second) {
            std::string s = p.mgr->state(slot);
            if (s == "software: not offered")
                s = "software: a higher-priority overlapping rule stays in software";
            return s;
        }
    }
    if (!any) return "software: not offered (table > 0, or no port takes flow rules)";
    return "offloaded";
}

}  // namespace ferry
