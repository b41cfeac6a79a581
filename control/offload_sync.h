// Keeps every port's NIC flow rules in step with the table-0 rules: after each rule change the
// rules a port's device can hold are installed, the rest stay in software with a reason.
// Context: control thread only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "control/offload/offload_manager.h"
#include "dataplane/rule.h"

namespace ferry {

/// One table-0 rule as the offload layer sees it.
struct OffloadCandidate {
    uint32_t slot;
    int32_t priority;
    const std::vector<CompiledRule>* entries;
};

class OffloadSync {
public:
    /// Starts managing a port (probes its device). Context: control, port configured.
    void add_port(uint16_t port_slot, uint16_t dpdk_port);
    /// Destroys the port's flows and forgets it. Context: control, before the port closes.
    void remove_port(uint16_t port_slot);
    /// Installs and removes flows so that each port holds the rules it can, highest priority
    /// first. A rule is offloaded on a port only if every higher-priority rule overlapping it is
    /// offloaded there too, so the NIC never takes a frame a higher software rule would have.
    /// @param rules every table-0 rule, in any order
    void sync(const std::vector<OffloadCandidate>& rules);
    /// "offloaded" when every port the rule applies to holds it; otherwise "software: <reason>".
    std::string state(uint32_t slot) const;

private:
    struct Port {
        uint16_t slot;
        std::unique_ptr<OffloadManager> mgr;
        std::vector<int32_t> priorities;     // distinct priorities last installed against
        std::map<uint32_t, bool> installed;  // rule slot -> offloaded
    };
    void sync_port(Port& p, const std::vector<OffloadCandidate>& ordered,
                   const std::vector<int32_t>& priorities);
    std::map<uint16_t, Port> ports_;
};

}  // namespace ferry
