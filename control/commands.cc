#include "control/commands.h"

#include <rte_version.h>

#include "control/config.h"
#include "control/counter_catalog.h"
#include "control/ct_control.h"
#include "control/dpi_control.h"
#include "control/log.h"
#include "control/migrate_commands.h"
#include "control/switch.h"
#include "control/telemetry.h"
#include "dataplane/rule.h"
#include "ferry_version.h"

namespace ferry {
namespace {

constexpr int kApiVersion = 1;

std::string opt_string(const nlohmann::json& p, const char* key) {
    return p.contains(key) ? p[key].get<std::string>() : std::string();
}

/// The names of a table, "a, b, c", for error messages. Context: any.
template <size_t N>
std::string joined(const std::array<std::string_view, N>& names) {
    std::string out;
    for (std::string_view n : names) out.append(out.empty() ? "" : ", ").append(n);
    return out;
}

/// log.level: shows every subsystem's level, or one's; with a level, sets it first (for the
/// named subsystem, or for all). Context: control.
/// @return [{subsystem, level}] of the subsystems concerned, or kInvalidParams for an unknown
///         subsystem or level
Result<nlohmann::json> log_level_command(const nlohmann::json& p) {
    std::optional<LogSubsystem> only;
    if (p.contains("subsystem")) {
        const std::string name = p["subsystem"].get<std::string>();
        only = log_subsystem_from_name(name);
        if (!only)
            return make_error(ErrorCode::kInvalidParams,
                              "params.subsystem: unknown subsystem '" + name +
                                  "' (known: " + joined(kLogSubsystemNames) + ")");
    }
    if (p.contains("level")) {
        const std::string name = p["level"].get<std::string>();
        std::optional<LogLevel> level = log_level_from_name(name);
        if (!level)
            return make_error(ErrorCode::kInvalidParams, "params.level: unknown level '" + name +
                                                             "' (known: " + joined(kLogLevelNames) +
                                                             ")");
        if (only)
            log_set_level(*only, *level);
        else
            log_set_level(*level);
        FERRY_LOG_INFO_IN(kControl, "log level of %s: %s",
                          only ? std::string(log_subsystem_name(*only)).c_str() : "every subsystem",
                          std::string(log_level_name(*level)).c_str());
    }
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < kLogSubsystemNames.size(); ++i) {
        const auto s = static_cast<LogSubsystem>(i);
        if (only && *only != s) continue;
        out.push_back(
            {{"subsystem", kLogSubsystemNames[i]}, {"level", log_level_name(log_level(s))}});
    }
    return out;
}

/// Applies the config's log levels: every subsystem's, then single ones. Context: control.
void apply_log_config(const LogConfig& cfg) {
    if (cfg.level) log_set_level(*cfg.level);
    for (const auto& [subsystem, level] : cfg.subsystems) log_set_level(subsystem, level);
}

}  // namespace

std::vector<CommandSpec> make_commands(Switch& sw, std::function<nlohmann::json()> describe) {
    using json = nlohmann::json;
    // The config's log levels take effect here, once the switch is built: ferryd's main reads
    // the config but applies only --log-level, and this is the first step that sees both.
    apply_log_config(sw.config().log);
    std::vector<CommandSpec> t;
    t.push_back(
        {"version",
         "ferryd, DPDK and control API versions",
         true,
         {},
         [](const json&) -> Result<json> {
             return json{{"ferryd", FERRY_VERSION}, {"dpdk", rte_version()}, {"api", kApiVersion}};
         }});
    t.push_back({"help",
                 "the methods, their parameters and whether they pause the workers",
                 true,
                 {},
                 [describe](const json&) -> Result<json> { return describe(); }});
    t.push_back({"port.list",
                 "ports with their state, device and VLAN settings",
                 true,
                 {},
                 [&sw](const json&) -> Result<json> { return sw.port_list(); }});
    // port.add takes the same object as an element of the config's "ports" array.
    t.push_back({"port.add",
                 "attach and start a port (same keys as a config port)",
                 true,
                 {{"name", ParamType::kString, true, "port name"},
                  {"type", ParamType::kString, true, "vhost-user or dpdk"},
                  {"path", ParamType::kString, false, "vhost-user socket path"},
                  {"mode", ParamType::kString, false, "server or client"},
                  {"devargs", ParamType::kString, false, "DPDK device arguments"},
                  {"queues", ParamType::kUnsigned, false, "rx queues"},
                  {"mtu", ParamType::kUnsigned, false, "largest L3 packet in and out (68..9000)"},
                  {"rx_pin", ParamType::kArray, false, "worker lcore per rx queue"},
                  {"vlan_mode", ParamType::kString, false, "trunk or access"},
                  {"tag", ParamType::kUnsigned, false, "access VLAN or trunk native VLAN"},
                  {"trunks", ParamType::kArray, false, "VLANs a trunk carries"},
                  {"security", ParamType::kObject, false,
                   "addresses the port may send from (port.security)"}},
                 [&sw](const json& p) -> Result<json> {
                     auto cfg = parse_port_config(p, "params");
                     if (!cfg) return cfg.error();
                     return sw.add_port(cfg.value());
                 }});
    t.push_back({"port.security",
                 "show, set or (null) remove the addresses a port may send from",
                 true,
                 {{"name", ParamType::kString, true, "port name"},
                  {"security", ParamType::kAny, false,
                   "{mac, ips?, allowed_address_pairs?} as a config port's, or null: off"}},
                 [&sw](const json& p) -> Result<json> {
                     const std::string name = p["name"].get<std::string>();
                     auto it = p.find("security");
                     if (it == p.end()) return sw.port_security(name);
                     std::optional<PortSecurityConfig> sec;
                     if (!it->is_null()) {
                         auto parsed = parse_port_security(*it, "params.security");
                         if (!parsed) return parsed.error();
                         sec = std::move(parsed.value());
                     }
                     return sw.set_port_security(name, std::move(sec));
                 }});
    t.push_back({"port.addresses",
                 "a port's addresses: configured (port security) and observed, with flags",
                 true,
                 {{"name", ParamType::kString, true, "port name"}},
                 [&sw](const json& p) -> Result<json> {
                     return sw.port_addresses(p["name"].get<std::string>());
                 }});
    t.push_back({"port.del",
                 "stop and detach a port; its MAC entries are forgotten",
                 true,
                 {{"name", ParamType::kString, true, "port name"}},
                 [&sw](const json& p) -> Result<json> {
                     Status st = sw.del_port(p["name"].get<std::string>());
                     if (!st) return st.error();
                     return json{{"deleted", p["name"]}};
                 }});
    t.push_back({"port.stats",
                 "packet, byte and drop counters of one port or all",
                 true,
                 {{"name", ParamType::kString, false, "port name (default: all)"}},
                 [&sw](const json& p) { return sw.port_stats(opt_string(p, "name")); }});
    t.push_back({"mac.list",
                 "learned MAC addresses",
                 true,
                 {{"port", ParamType::kString, false, "only this port"},
                  {"vlan", ParamType::kUnsigned, false, "only this VLAN"}},
                 [&sw](const json& p) -> Result<json> {
                     std::optional<uint16_t> vlan;
                     if (p.contains("vlan")) {
                         uint64_t v = p["vlan"].get<uint64_t>();
                         if (v > 4095)
                             return make_error(ErrorCode::kInvalidParams,
                                               "vlan: must be in 0..4095");
                         vlan = static_cast<uint16_t>(v);
                     }
                     return sw.mac_list(opt_string(p, "port"), vlan);
                 }});
    t.push_back({"mac.flush",
                 "forget learned MAC addresses of one port or all",
                 true,
                 {{"port", ParamType::kString, false, "only this port"}},
                 [&sw](const json& p) { return sw.mac_flush(opt_string(p, "port")); }});
    // Rules: a change builds and publishes a new classifier; workers never stop for it.
    t.push_back({"rule.add",
                 "add one rule (rule) or several at once (rules), all or none",
                 true,
                 {{"rule", ParamType::kObject, false, "a rule (docs/rules.md)"},
                  {"rules", ParamType::kArray, false, "rules added together, atomically"}},
                 [&sw](const json& p) -> Result<json> {
                     if (p.contains("rule") == p.contains("rules"))
                         return make_error(ErrorCode::kInvalidParams,
                                           "params: give exactly one of rule or rules");
                     if (p.contains("rule"))
                         return sw.rules().add({p["rule"]}, sw.rule_context(), "params.rule",
                                               false);
                     std::vector<json> rules(p["rules"].begin(), p["rules"].end());
                     return sw.rules().add(rules, sw.rule_context(), "params.rules");
                 }});
    t.push_back({"rule.del",
                 "delete rules by id (id or ids), all or none",
                 true,
                 {{"id", ParamType::kUnsigned, false, "rule id"},
                  {"ids", ParamType::kArray, false, "rule ids"}},
                 [&sw](const json& p) -> Result<json> {
                     if (p.contains("id") == p.contains("ids"))
                         return make_error(ErrorCode::kInvalidParams,
                                           "params: give exactly one of id or ids");
                     std::vector<uint64_t> ids;
                     if (p.contains("id")) ids.push_back(p["id"].get<uint64_t>());
                     for (size_t i = 0; p.contains("ids") && i < p["ids"].size(); ++i) {
                         if (!p["ids"][i].is_number_unsigned())
                             return make_error(ErrorCode::kInvalidParams,
                                               "params.ids[" + std::to_string(i) +
                                                   "]: must be an unsigned integer");
                         ids.push_back(p["ids"][i].get<uint64_t>());
                     }
                     return sw.rules().del(ids);
                 }});
    auto table_param = [](const json& p) -> Result<std::optional<uint8_t>> {
        if (!p.contains("table")) return std::optional<uint8_t>();
        uint64_t t = p["table"].get<uint64_t>();
        if (t >= kMaxTables)
            return make_error(ErrorCode::kInvalidParams, "params.table: must be in 0..63");
        return std::optional<uint8_t>(static_cast<uint8_t>(t));
    };
    t.push_back({"rule.list",
                 "rules with their packet and byte hit counters",
                 true,
                 {{"table", ParamType::kUnsigned, false, "only this table"}},
                 [&sw, table_param](const json& p) -> Result<json> {
                     auto table = table_param(p);
                     if (!table) return table.error();
                     return sw.rules().list(table.value());
                 }});
    t.push_back({"rule.flush",
                 "delete every rule, or every rule of one table",
                 true,
                 {{"table", ParamType::kUnsigned, false, "only this table"}},
                 [&sw, table_param](const json& p) -> Result<json> {
                     auto table = table_param(p);
                     if (!table) return table.error();
                     return sw.rules().flush(table.value());
                 }});
    t.push_back({"flow.dump",
                 "one worker's flow cache, read in short slices",
                 true,
                 {{"lcore", ParamType::kUnsigned, false, "worker lcore (default: the first)"},
                  {"limit", ParamType::kUnsigned, false, "at most this many entries (1000)"}},
                 [&sw](const json& p) -> Result<json> {
                     unsigned lcore =
                         p.contains("lcore") ? p["lcore"].get<unsigned>() : sw.first_worker_lcore();
                     size_t limit = p.contains("limit") ? p["limit"].get<size_t>() : 1000;
                     return sw.flow_dump(lcore, limit);
                 }});
    t.push_back({"stats",
                 "switch-wide counters: workers, ports, tables",
                 true,
                 {},
                 [&sw](const json&) -> Result<json> { return sw.stats(); }});
    t.push_back({"stats.describe",
                 "names and descriptions of the drop reasons and the conntrack counters",
                 true,
                 {},
                 [](const json&) -> Result<json> { return counter_catalog(); }});
    t.push_back({"shutdown",
                 "stop ferryd cleanly after answering",
                 true,
                 {},
                 [&sw](const json&) -> Result<json> {
                     sw.request_shutdown();
                     return json{{"shutting_down", true}};
                 }});
    t.push_back({"log.level",
                 "show the log levels of the subsystems, or set one's (subsystem) or every one's",
                 true,
                 {{"subsystem", ParamType::kString, false, "only this subsystem, e.g. migrate"},
                  {"level", ParamType::kString, false, "set it: debug, info, warn or error"}},
                 log_level_command});
    add_ct_commands(t, sw);
    add_dpi_commands(t, sw);
    add_migrate_commands(t, sw);
    // Telemetry's /ferry/stats, /ferry/ct, /ferry/dpi, /ferry/migration... run these rows'
    // handlers; the migration session is reachable only through them.
    telemetry_bind_methods(t);
    return t;
}

}  // namespace ferry
