// The names and descriptions of the counters ferryd reports by name, from the tables that define
// them (dataplane/drop_reason.h, dataplane/counters.h, dataplane/conntrack/ct_shard.h,
// control/ct_control.h, control/device_counters.h), and the migration phases' names
// (migrate/phase.h): what the stats.describe method and `ferryd --print-counters` answer, so that
// clients, the exporter, the docs and the tests take the names from ferryd rather than keeping a
// copy.
#pragma once

#include <nlohmann/json.hpp>

namespace ferry {

/// {drop_reasons: [{name, description}], ct_counters, worker_counters, dpi_counters,
/// port_counters, device_counters: [{name, kind, description}], migration_phases: [name]}, each
/// list in its table's order; kind is "counter" (only grows) or "gauge" (a live count).
/// Context: any.
nlohmann::json counter_catalog();

}  // namespace ferry
