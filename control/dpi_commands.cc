// The dpi.* methods of the control socket. Loading compiles on the control thread and
// publishes the new database with RCU, so every method is safe while the workers run.
#include "control/dpi_control.h"
#include "control/json_path.h"
#include "control/switch.h"

namespace ferry {

using json = nlohmann::json;

void add_dpi_commands(std::vector<CommandSpec>& t, Switch& sw) {
    t.push_back({"dpi.load",
                 "add payload patterns (same id: replaced), or replace the whole set; compiled "
                 "and published while traffic flows",
                 true,
                 {{"patterns", ParamType::kArray, true, "pattern objects (docs/dpi.md)"},
                  {"replace", ParamType::kBoolean, false, "replace every loaded pattern"}},
                 [&sw](const json& p) -> Result<json> {
                     auto patterns = parse_dpi_patterns(p["patterns"], "params.patterns");
                     if (!patterns) return patterns.error();
                     return sw.dpi().load(std::move(*patterns), p.value("replace", false));
                 }});
    t.push_back({"dpi.list",
                 "the loaded patterns with their match counts",
                 true,
                 {},
                 [&sw](const json&) -> Result<json> { return sw.dpi().list(); }});
    t.push_back({"dpi.stats",
                 "inspection counters (total and by worker), streams, database, matches per "
                 "pattern",
                 true,
                 {},
                 [&sw](const json&) -> Result<json> { return sw.dpi().stats(); }});
    t.push_back({"dpi.clear",
                 "remove the listed patterns, or all of them",
                 true,
                 {{"ids", ParamType::kArray, false, "pattern ids (default: all)"}},
                 [&sw](const json& p) -> Result<json> {
                     std::vector<uint32_t> ids;
                     if (p.contains("ids")) {
                         const json& a = p["ids"];
                         for (size_t i = 0; i < a.size(); ++i) {
                             if (!a[i].is_number_unsigned() || a[i].get<uint64_t>() > 0xffffffffu)
                                 return json_path::invalid(json_path::at("params.ids", i),
                                                           "must be a pattern id (0..4294967295)");
                             ids.push_back(a[i].get<uint32_t>());
                         }
                         if (ids.empty())
                             return json_path::invalid("params.ids",
                                                       "must not be empty (omit it to clear all)");
                     }
                     return sw.dpi().clear(ids);
                 }});
}

}  // namespace ferry
