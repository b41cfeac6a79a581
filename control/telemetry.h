// ferryd's counters in DPDK telemetry (`dpdk-telemetry.py`): /ferry/stats, /ferry/ports,
// /ferry/port_stats,<name>, /ferry/workers.
#pragma once

namespace ferry {

class Switch;

/// Registers the /ferry/* telemetry commands for sw. Context: control, after rte_eal_init.
/// The callbacks run on DPDK's telemetry thread and read through Switch's locked accessors.
/// Call telemetry_detach() before sw is destroyed.
void telemetry_attach(Switch* sw);
void telemetry_detach();

}  // namespace ferry
