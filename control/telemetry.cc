#include "control/telemetry.h"

#include <rte_telemetry.h>

#include <atomic>
#include <string>

#include "control/switch.h"

namespace ferry {
namespace {

// Telemetry callbacks take no user argument, so the switch they report on is kept here. Written
// by the control thread only; a null switch makes every callback answer with an error.
std::atomic<Switch*> g_switch{nullptr};

/// Adds a flat JSON object's numbers and strings to a telemetry dict. Context: telemetry thread.
void add_flat(rte_tel_data* d, const nlohmann::json& obj, const std::string& prefix = "") {
    for (const auto& [k, v] : obj.items()) {
        std::string name = prefix + k;
        if (v.is_number_unsigned() || v.is_number_integer())
            rte_tel_data_add_dict_u64(d, name.c_str(), v.get<uint64_t>());
        else if (v.is_string())
            rte_tel_data_add_dict_string(d, name.c_str(), v.get<std::string>().c_str());
        else if (v.is_object())
            add_flat(d, v, name + "_");
    }
}

int cb_stats(const char*, const char*, rte_tel_data* d) {
    Switch* sw = g_switch.load();
    if (sw == nullptr) return -1;
    nlohmann::json s = sw->stats();
    s.erase("workers");
    rte_tel_data_start_dict(d);
    add_flat(d, s);
    return 0;
}

int cb_ports(const char*, const char*, rte_tel_data* d) {
    Switch* sw = g_switch.load();
    if (sw == nullptr) return -1;
    rte_tel_data_start_array(d, RTE_TEL_STRING_VAL);
    for (const auto& p : sw->port_list())
        rte_tel_data_add_array_string(d, p["name"].get<std::string>().c_str());
    return 0;
}

int cb_port_stats(const char*, const char* params, rte_tel_data* d) {
    Switch* sw = g_switch.load();
    if (sw == nullptr || params == nullptr || *params == '\0') return -1;
    auto r = sw->port_stats(params);
    if (!r || r.value().empty()) return -1;
    rte_tel_data_start_dict(d);
    add_flat(d, r.value()[0]);
    return 0;
}

int cb_workers(const char*, const char*, rte_tel_data* d) {
    Switch* sw = g_switch.load();
    if (sw == nullptr) return -1;
    // DPDK 22.11 takes only arrays as containers, so each worker's counters are flat keys
    // prefixed with its lcore: lcore1_packets, lcore1_busy_cycles, ...
    rte_tel_data_start_dict(d);
    // Keep the stats alive for the loop: iterating stats()["workers"] directly would walk a
    // member of a temporary that is gone before the first iteration.
    const nlohmann::json stats = sw->stats();
    for (const auto& w : stats["workers"])
        add_flat(d, w, "lcore" + std::to_string(w["lcore"].get<unsigned>()) + "_");
    return 0;
}

}  // namespace

void telemetry_attach(Switch* sw) {
    g_switch.store(sw);
    rte_telemetry_register_cmd("/ferry/stats", cb_stats, "Switch counters. No parameters");
    rte_telemetry_register_cmd("/ferry/ports", cb_ports, "Port names. No parameters");
    rte_telemetry_register_cmd("/ferry/port_stats", cb_port_stats,
                               "Counters of one port. Parameter: port name");
    rte_telemetry_register_cmd("/ferry/workers", cb_workers, "Per-worker counters. No parameters");
}

void telemetry_detach() {
    g_switch.store(nullptr);
}

}  // namespace ferry
