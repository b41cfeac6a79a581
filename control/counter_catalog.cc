#include "control/counter_catalog.h"

#include <string>

#include "control/ct_control.h"
#include "control/device_counters.h"
#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/counters.h"
#include "dataplane/dpi/dpi_engine.h"
#include "dataplane/drop_reason.h"
#include "migrate/phase.h"

namespace ferry {
namespace {

const char* kind_name(CounterKind k) {
    return k == CounterKind::kGauge ? "gauge" : "counter";
}

template <typename Info>
nlohmann::json describe(const Info& k) {
    return {{"name", std::string(k.name)},
            {"kind", kind_name(k.kind)},
            {"description", std::string(k.description)}};
}

/// Every row of a table whose rows name no kind: counters all (they only grow).
template <typename Table>
nlohmann::json describe_counters(const Table& table) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& k : table)
        out.push_back({{"name", std::string(k.name)},
                       {"kind", kind_name(CounterKind::kCounter)},
                       {"description", std::string(k.description)}});
    return out;
}

}  // namespace

nlohmann::json counter_catalog() {
    nlohmann::json drops = nlohmann::json::array();
    for (const DropReasonInfo& r : kDropReasons)
        drops.push_back(
            {{"name", std::string(r.name)}, {"description", std::string(r.description)}});
    nlohmann::json ct = nlohmann::json::array();
    for (const CtCounterInfo& k : kCtCounters) ct.push_back(describe(k));
    for (const CtWorkerCounterInfo& k : kCtHandoffCounters) ct.push_back(describe(k));
    const nlohmann::json worker = describe_counters(kWorkerCounters);
    const nlohmann::json dpi = describe_counters(kDpiCounters);
    const nlohmann::json port = describe_counters(kPortCounters);
    const nlohmann::json device = describe_counters(kDeviceCounters);
    nlohmann::json phases = nlohmann::json::array();
    for (const PhaseInfo& p : kPhases) phases.push_back(std::string(p.name));
    return {{"drop_reasons", drops},     {"ct_counters", ct},     {"worker_counters", worker},
            {"dpi_counters", dpi},       {"port_counters", port}, {"device_counters", device},
            {"migration_phases", phases}};
}

}  // namespace ferry
