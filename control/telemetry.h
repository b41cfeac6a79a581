// ferryd's counters in DPDK telemetry (`dpdk-telemetry.py`): /ferry/ports and
// /ferry/port_stats,<name> from the switch's locked port registry; /ferry/stats, /ferry/workers,
// /ferry/ct, /ferry/ct_zones, /ferry/dpi and /ferry/migration from the control methods' own
// handlers, run on the control thread (docs/architecture.md#telemetry).
#pragma once

#include <vector>

#include "control/command_table.h"

namespace ferry {

class Switch;

/// Registers the /ferry/* telemetry commands for sw. Context: control, after rte_eal_init.
/// The callbacks run on DPDK's telemetry thread; the port endpoints read through Switch's locked
/// accessors, the method-backed endpoints run their handler on the control thread.
/// Call telemetry_detach() before sw is destroyed.
void telemetry_attach(Switch* sw);
/// Stops every callback from touching the switch and drops the bound handlers; a callback
/// running meanwhile answers with an error. Context: control.
void telemetry_detach();

/// Keeps copies of the handlers of stats, ct.stats, dpi.stats and migrate.status from the
/// command table for the endpoints built on them (the migration session is reachable only
/// through its rows). Rows missing from the table leave their endpoint
/// answering with an error. Context: control, before telemetry_attach.
void telemetry_bind_methods(const std::vector<CommandSpec>& table);

}  // namespace ferry
