// ferryd's counters in DPDK telemetry (`dpdk-telemetry.py`): /ferry/stats, /ferry/ports,
// /ferry/port_stats,<name>, /ferry/workers, and from the control methods' own handlers
// /ferry/ct, /ferry/ct_zones, /ferry/dpi and /ferry/migration (docs/architecture.md#telemetry).
#pragma once

#include <vector>

#include "control/command_table.h"

namespace ferry {

class Switch;

/// Registers the /ferry/* telemetry commands for sw. Context: control, after rte_eal_init.
/// The callbacks run on DPDK's telemetry thread; the counters read through Switch's locked
/// accessors, the method-backed endpoints run their handler on the control thread.
/// Call telemetry_detach() before sw is destroyed.
void telemetry_attach(Switch* sw);
/// Stops every callback from touching the switch and drops the bound handlers; a callback
/// running meanwhile answers with an error. Context: control.
void telemetry_detach();

/// Keeps copies of the handlers of ct.stats, dpi.stats and migrate.status from the command
/// table for /ferry/ct, /ferry/ct_zones, /ferry/dpi and /ferry/migration (the migration session
/// is reachable only through its rows). Rows missing from the table leave their endpoint
/// answering with an error. Context: control, before telemetry_attach.
void telemetry_bind_methods(const std::vector<CommandSpec>& table);

}  // namespace ferry
