// Flow rules as users write them (config "rules" and the rule.* methods), and their
// compilation into the masked CompiledRule entries the classifier holds. The JSON shape is
// specified in docs/rules.md.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/config.h"
#include "dataplane/result.h"
#include "dataplane/rule.h"

namespace ferry {

/// What rule compilation needs to know about the switch. Context: control.
struct RuleContext {
    /// Port slot of a port name, or nullopt for an unknown port.
    std::function<std::optional<uint16_t>(const std::string&)> port_slot;
    /// Whether a meter id is configured.
    std::function<bool(uint32_t)> meter_exists;
};

struct RuleSpec {
    uint64_t id = 0;                    // user's id, unique in the switch
    uint8_t table = 0;                  // 0..kMaxTables-1
    int32_t priority = 0;               // higher wins; default 0
    nlohmann::json source;              // the rule as given, normalised (for rule.list)
    std::vector<CompiledRule> entries;  // one or more (port ranges expand into prefixes)
};

/// Parses and validates one JSON rule and compiles it. Context: control.
/// @param path prefix for error messages, e.g. "rules[3]" or "params"
/// @return the compiled rule (entries' `index` fields are 0: the caller assigns the slot), or
///         kInvalidParams naming the offending field ("rules[3].match.ip_dst: bad prefix length
///         33"), or kNotFound for an unknown port or meter name ("...match.in_port: no port named
///         vm9").
Result<RuleSpec> parse_rule(const nlohmann::json& rule, const RuleContext& ctx,
                            const std::string& path);

/// Expands an inclusive L4 port range into a minimal list of (value, mask) prefixes, ordered
/// from lo upwards; empty when lo > hi. Context: any.
std::vector<std::pair<uint16_t, uint16_t>> port_range_to_masks(uint16_t lo, uint16_t hi);

/// Checks the rules of a configuration against its own ports and meters, as ferryd will when it
/// starts (`ferryd --check`): each rule compiles, ids are unique. Context: control.
/// @return the first refusal, named by its path (e.g. "rules[2].match.in_port: no port named x")
Status check_config_rules(const Config& cfg);

}  // namespace ferry
