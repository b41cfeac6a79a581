// libFuzzer target for parse_rule: any byte string that is a JSON object is a candidate rule
// (the params of rule.add, an element of the config's "rules"), in a switch with ports vm1 (slot
// 0) and vm2 (slot 1) and meter 1. Besides the sanitizers' checks it traps when a rule that
// parsed breaks what the classifier relies on (value == value & mask, 1..kMaxActions actions,
// tables in range, actions as docs/rules.md defines them) or an error is not the documented
// kind. Run through scripts/fuzz.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "control/rule_config.h"

namespace {

/// Aborts the run so libFuzzer records the input as a crash. Context: fuzzer only.
void check(bool ok) {
    if (!ok) __builtin_trap();
}

constexpr uint16_t kPorts = 2;              // vm1, vm2
constexpr size_t kMaxEntriesPerRule = 256;  // docs/rules.md

const ferry::RuleContext& context() {
    static const ferry::RuleContext ctx{
        .port_slot = [](const std::string& name) -> std::optional<uint16_t> {
            if (name == "vm1") return 0;
            if (name == "vm2") return 1;
            return std::nullopt;
        },
        .meter_exists = [](uint32_t id) { return id == 1; },
    };
    return ctx;
}

void check_action(const ferry::Action& a, const ferry::CompiledRule& e, size_t i) {
    using ferry::ActionType;
    check(a.type < ActionType::kCount);
    check(a.flags == 0);
    switch (a.type) {
        case ActionType::kOutput:
        case ActionType::kMirror:
            check(a.arg16 < kPorts && a.arg32 == 0);
            break;
        case ActionType::kDrop:
            check(e.n_actions == 1);
            [[fallthrough]];
        case ActionType::kNormal:
        case ActionType::kFlood:
        case ActionType::kPopVlan:
            check(a.arg16 == 0 && a.arg32 == 0);
            break;
        case ActionType::kPushVlan:
        case ActionType::kSetVlan:
            check(a.arg16 <= 4094 && a.arg32 == 0);
            break;
        case ActionType::kMeter:
            check(a.arg32 == 1 && a.arg16 == 0);
            break;
        case ActionType::kGotoTable:
            check(a.arg16 > e.table && a.arg16 < ferry::kMaxTables);
            check(i + 1 == e.n_actions);
            break;
        case ActionType::kCt: {
            check((a.arg32 & ~(ferry::kCtCommit | ferry::kCtHasTable | 0xff00u)) == 0);
            const uint32_t table = (a.arg32 >> 8) & 0xff;
            if (a.arg32 & ferry::kCtHasTable) {
                check(table > e.table && table < ferry::kMaxTables);
            } else {
                check(table == 0);
            }
            break;
        }
        case ActionType::kDpi:
            check(a.arg16 == 0 && a.arg32 == 0);
            break;
        case ActionType::kCount:
            check(false);
            break;
    }
}

}  // namespace

// The name is libFuzzer's entry point, not ours to choose.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        const nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
        if (doc.is_discarded() || !doc.is_object()) return 0;

        ferry::Result<ferry::RuleSpec> spec = ferry::parse_rule(doc, context(), "rule");
        if (!spec) {
            check(spec.error().code == ferry::ErrorCode::kInvalidParams ||
                  spec.error().code == ferry::ErrorCode::kNotFound);
            check(spec.error().message.starts_with("rule"));
            return 0;
        }

        check(spec->table < ferry::kMaxTables);
        check(!spec->entries.empty() && spec->entries.size() <= kMaxEntriesPerRule);
        check(spec->source.is_object() && spec->source.at("id") == spec->id);
        const ferry::CompiledRule& first = spec->entries.front();
        for (const ferry::CompiledRule& e : spec->entries) {
            const auto* value = reinterpret_cast<const uint8_t*>(&e.value);
            const auto* mask = reinterpret_cast<const uint8_t*>(&e.mask);
            for (size_t b = 0; b < sizeof(ferry::FlowKey); ++b) {
                check(value[b] == (value[b] & mask[b]));
            }
            check(e.n_actions >= 1 && e.n_actions <= ferry::kMaxActions);
            check(e.table < ferry::kMaxTables && e.table == spec->table);
            check(e.priority == spec->priority);
            check(e.index == 0);
            // Entries differ only in their L4 ports; they share the actions.
            check(e.n_actions == first.n_actions);
            for (size_t i = 0; i < e.n_actions; ++i) {
                check_action(e.actions[i], e, i);
                const ferry::Action& a = e.actions[i];
                const ferry::Action& b = first.actions[i];
                check(a.type == b.type && a.arg16 == b.arg16 && a.arg32 == b.arg32);
            }
            check(e.mask.in_port == 0 || (e.mask.in_port == 0xffff && e.value.in_port < kPorts));
        }
        // rule.list shows the normalised source; it must serialise.
        (void)spec->source.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
    } catch (...) {
        // parse_rule reports errors as a Result; the source holds only parsed (valid UTF-8)
        // strings, so dump(strict) cannot throw either.
        __builtin_trap();
    }
    return 0;
}
