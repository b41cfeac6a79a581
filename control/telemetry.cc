#include "control/telemetry.h"

#include <rte_telemetry.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "control/log.h"
#include "control/switch.h"

namespace ferry {
namespace {

// Telemetry callbacks take no user argument, so the switch they report on is kept here. Written
// by the control thread only; a null switch makes every callback answer with an error.
std::atomic<Switch*> g_switch{nullptr};

// The control methods behind the method-backed endpoints, by method name. g_bound_mutex guards
// the map and orders a callback's post() against telemetry_detach(): once detach has taken it,
// no callback posts to the switch any more.
std::mutex g_bound_mutex;
std::map<std::string, CommandHandler, std::less<>> g_bound;

// How long a method-backed endpoint waits for the control thread (which runs its housekeeping
// at least every 50 ms, but may be inside a paused-worker step for longer).
constexpr auto kControlWait = std::chrono::seconds(1);
// DPDK 22.11 holds at most this many entries in a telemetry dict (RTE_TEL_MAX_DICT_ENTRIES).
constexpr size_t kMaxDictEntries = 256;

/// Adds a JSON object's numbers, booleans (0/1) and strings to a telemetry dict; nested objects
/// become keys joined by '_', floating-point values strings with three decimals (22.11 has no
/// double), arrays are left out. Context: telemetry thread.
void add_flat(rte_tel_data* d, const nlohmann::json& obj, const std::string& prefix = "") {
    for (const auto& [k, v] : obj.items()) {
        std::string name = prefix + k;
        if (v.is_number_unsigned() || v.is_number_integer()) {
            rte_tel_data_add_dict_u64(d, name.c_str(), v.get<uint64_t>());
        } else if (v.is_boolean()) {
            rte_tel_data_add_dict_u64(d, name.c_str(), v.get<bool>() ? 1 : 0);
        } else if (v.is_number_float()) {
            char text[32];
            std::snprintf(text, sizeof(text), "%.3f", v.get<double>());
            rte_tel_data_add_dict_string(d, name.c_str(), text);
        } else if (v.is_string()) {
            rte_tel_data_add_dict_string(d, name.c_str(), v.get<std::string>().c_str());
        } else if (v.is_object()) {
            add_flat(d, v, name + "_");
        }
    }
}

/// Runs a bound control method with no params on the control thread and waits for its result.
/// Context: telemetry thread. @return the result, or nullopt when there is no switch, no such
///         method, the method failed, or the control thread did not run it within kControlWait
std::optional<nlohmann::json> call_on_control(std::string_view method) {
    auto done = std::make_shared<std::promise<Result<nlohmann::json>>>();
    std::future<Result<nlohmann::json>> answer = done->get_future();
    {
        std::lock_guard lock(g_bound_mutex);
        Switch* sw = g_switch.load();
        auto it = g_bound.find(method);
        if (sw == nullptr || it == g_bound.end()) return std::nullopt;
        // The task owns a copy of the handler: it may run after detach cleared the map.
        sw->post([handler = it->second, done] {
            try {
                done->set_value(handler(nlohmann::json::object()));
            } catch (const std::exception& e) {
                done->set_value(make_error(ErrorCode::kInternal, e.what()));
            }
        });
    }
    if (answer.wait_for(kControlWait) != std::future_status::ready) {
        FERRY_LOG_WARN_IN(kTelemetry, "%.*s: the control thread did not answer within %lld ms",
                          static_cast<int>(method.size()), method.data(),
                          static_cast<long long>(std::chrono::milliseconds(kControlWait).count()));
        return std::nullopt;
    }
    Result<nlohmann::json> r = answer.get();
    if (!r) {
        FERRY_LOG_DEBUG_IN(kTelemetry, "%.*s: %s", static_cast<int>(method.size()), method.data(),
                           r.error().message.c_str());
        return std::nullopt;
    }
    return std::move(r.value());
}

/// /ferry/stats: the stats method without its workers. It runs on the control thread because
/// Switch::stats() reads the rule table, which only the control thread may read while it
/// changes. Context: telemetry thread.
int cb_stats(const char*, const char*, rte_tel_data* d) {
    std::optional<nlohmann::json> s = call_on_control("stats");
    if (!s || !s->is_object()) return -1;
    s->erase("workers");
    rte_tel_data_start_dict(d);
    add_flat(d, *s);
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

/// /ferry/workers: the stats method's workers, from the control thread as /ferry/stats.
/// Context: telemetry thread.
int cb_workers(const char*, const char*, rte_tel_data* d) {
    // Keep the stats alive for the loop: iterating a member of a temporary would walk what is
    // gone before the first iteration.
    const std::optional<nlohmann::json> stats = call_on_control("stats");
    if (!stats || !stats->is_object()) return -1;
    // DPDK 22.11 takes only arrays as containers, so each worker's counters are flat keys
    // prefixed with its lcore: lcore1_packets, lcore1_busy_cycles, ...
    rte_tel_data_start_dict(d);
    for (const auto& w : (*stats)["workers"])
        add_flat(d, w, "lcore" + std::to_string(w["lcore"].get<unsigned>()) + "_");
    return 0;
}

/// /ferry/ct: ct.stats's totals and states, with the workers' counters summed. Context:
/// telemetry thread.
int cb_ct(const char*, const char*, rte_tel_data* d) {
    std::optional<nlohmann::json> s = call_on_control("ct.stats");
    if (!s || !s->is_object()) return -1;
    nlohmann::json flat = *s;
    flat.erase("zones");
    flat.erase("workers");
    std::map<std::string, uint64_t> sums;  // per-worker counters, summed
    for (const auto& w : (*s)["workers"])
        for (const auto& [k, v] : w.items())
            if (k != "worker" && k != "connections" && v.is_number_unsigned())
                sums[k] += v.get<uint64_t>();
    for (const auto& [k, v] : sums) flat[k] = v;
    rte_tel_data_start_dict(d);
    add_flat(d, flat);
    return 0;
}

/// /ferry/ct_zones: zone<N>_connections, _limit, _limit_drops, _liberal of the zones ct.stats
/// lists (those with connections, a limit, drops or the liberal option), as many as a dict
/// holds. Context: telemetry thread.
int cb_ct_zones(const char*, const char*, rte_tel_data* d) {
    std::optional<nlohmann::json> s = call_on_control("ct.stats");
    if (!s || !s->is_object()) return -1;
    rte_tel_data_start_dict(d);
    size_t entries = 0;
    for (const auto& z : (*s)["zones"]) {
        nlohmann::json one = z;
        one.erase("zone");
        if (entries + one.size() > kMaxDictEntries) break;
        entries += one.size();
        add_flat(d, one, "zone" + std::to_string(z["zone"].get<unsigned>()) + "_");
    }
    return 0;
}

/// /ferry/dpi: dpi.stats without its per-worker and per-pattern arrays. Context: telemetry.
int cb_dpi(const char*, const char*, rte_tel_data* d) {
    std::optional<nlohmann::json> s = call_on_control("dpi.stats");
    if (!s || !s->is_object()) return -1;
    rte_tel_data_start_dict(d);
    add_flat(d, *s);
    return 0;
}

/// /ferry/migration: migrate.status, durations as strings. Context: telemetry thread.
int cb_migration(const char*, const char*, rte_tel_data* d) {
    std::optional<nlohmann::json> s = call_on_control("migrate.status");
    if (!s || !s->is_object()) return -1;
    rte_tel_data_start_dict(d);
    add_flat(d, *s);
    return 0;
}

}  // namespace

void telemetry_bind_methods(const std::vector<CommandSpec>& table) {
    std::lock_guard lock(g_bound_mutex);
    g_bound.clear();
    for (const CommandSpec& row : table)
        if (row.name == "stats" || row.name == "ct.stats" || row.name == "dpi.stats" ||
            row.name == "migrate.status")
            g_bound.emplace(std::string(row.name), row.handler);
}

void telemetry_attach(Switch* sw) {
    g_switch.store(sw);
    rte_telemetry_register_cmd("/ferry/stats", cb_stats, "Switch counters. No parameters");
    rte_telemetry_register_cmd("/ferry/ports", cb_ports, "Port names. No parameters");
    rte_telemetry_register_cmd("/ferry/port_stats", cb_port_stats,
                               "Counters of one port. Parameter: port name");
    rte_telemetry_register_cmd("/ferry/workers", cb_workers, "Per-worker counters. No parameters");
    rte_telemetry_register_cmd("/ferry/ct", cb_ct,
                               "Connections by state, conntrack counters. No parameters");
    rte_telemetry_register_cmd("/ferry/ct_zones", cb_ct_zones,
                               "Connections, limit and drops per zone. No parameters");
    rte_telemetry_register_cmd("/ferry/dpi", cb_dpi,
                               "Payload inspection counters and database. No parameters");
    rte_telemetry_register_cmd("/ferry/migration", cb_migration,
                               "The current or last migration. No parameters");
}

void telemetry_detach() {
    std::lock_guard lock(g_bound_mutex);
    g_switch.store(nullptr);
    g_bound.clear();
}

}  // namespace ferry
