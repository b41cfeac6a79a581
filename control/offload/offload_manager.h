// The rte_flow rules of one DPDK port: installs the rules its device can hold, remembers why the
// others stay in software, and answers each rule's offload state for rule.list. Control thread
// only (rte_flow calls may sleep in the PMD); workers never touch it.
//
// States of a rule slot: absent (never offered, or removed) -> "software: not offered";
// installed -> "offloaded"; refused -> "software: <reason>". install() replaces the slot's state.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "dataplane/result.h"
#include "dataplane/rule.h"

struct rte_flow;

namespace ferry {

class OffloadManager {
public:
    /// Probes what the device takes: validates an ETH (then ETH/IPV4/UDP) rule with DROP and
    /// with MARK + PASSTHRU. Nothing is created. Context: control, port configured (validation
    /// of most PMDs needs the queues set up).
    explicit OffloadManager(uint16_t dpdk_port);
    /// Destroys the flows it created.
    ~OffloadManager();
    OffloadManager(const OffloadManager&) = delete;
    OffloadManager& operator=(const OffloadManager&) = delete;

    /// Offloads every entry of one rule (port ranges make several), all or none: on a failure the
    /// entries already created are destroyed. A rule whose action kind the probe refused goes to
    /// software without a device call. Any earlier state of the slot is removed first.
    /// Context: control.
    /// @param mark MARK id for non-drop rules (see translate_rule)
    /// @param priority_rank rte_flow priority (see priority_rank in flow_translate.h)
    /// @return Ok when the device holds every entry, else kFailed with the reason, also kept for
    ///         state(): the translator's, "device does not take drop: <msg>", or the message of
    ///         rte_flow_validate / rte_flow_create.
    Status install(uint32_t rule_slot, std::span<const CompiledRule> entries, uint32_t mark,
                   uint32_t priority_rank);
    /// Destroys the slot's flows and forgets its state. Context: control.
    void remove(uint32_t rule_slot);
    /// remove() of every slot. Context: control.
    void clear();
    /// "offloaded" or "software: <reason>". Context: control.
    std::string state(uint32_t rule_slot) const;
    /// Whether the device validated a probe rule of any action kind. Context: any.
    bool probe_ok() const { return takes_drop_ || takes_mark_; }
    bool takes_drop() const { return takes_drop_; }
    bool takes_mark() const { return takes_mark_; }
    uint16_t port() const { return port_; }

    /// Asks the PMD to deliver MARK ids in received mbufs (RTE_MBUF_F_RX_FDIR_ID). Must run
    /// before rte_eth_dev_configure. Context: control.
    /// @return Ok (also when the PMD does not implement the negotiation: it delivers marks
    ///         anyway, or has no flow support), or kFailed with the reason.
    static Status negotiate_mark_delivery(uint16_t dpdk_port);

private:
    struct Slot {
        std::vector<rte_flow*> flows;  // non-empty exactly when offloaded
        std::string reason;            // why not, when flows is empty
    };

    /// Destroys flows (errors ignored: the port may be gone). Context: control.
    void destroy(std::vector<rte_flow*>& flows);

    uint16_t port_;
    bool takes_drop_ = false;
    bool takes_mark_ = false;
    std::string drop_refusal_;  // the probe's message, when !takes_drop_
    std::string mark_refusal_;  // the probe's message, when !takes_mark_
    std::map<uint32_t, Slot> slots_;
};

}  // namespace ferry
