// Translation of a compiled flow rule into an rte_flow rule (attributes, pattern, actions), with
// no device involved: the offload manager validates and creates what this builds.
//
// Semantics. The NIC pattern matches the frames the software rule matches, or a subset of them,
// never more, so a frame the NIC leaves alone is still classified in software:
//  - a rule without a `vlan` match but with an ethertype or IP fields puts the type in the ETH
//    item, which rte_flow defines as untagged frames only (software also matches tagged ones:
//    "ethertype after the tags" has no portable rte_flow form); a pure L2 rule (MACs) leaves
//    type and has_vlan open and matches tagged and untagged frames, as software does;
//  - `"vlan": "none"` sets has_vlan = 0 when no type says it already;
//  - with a VID match, the ethertype goes into the VLAN item's inner_type: a double-tagged frame
//    has 0x8100 there and is left to software;
//  - IPv6 `ip_proto` is the fixed header's next header: frames with extension headers are left
//    to software.
// Because of this subset, a caller must not offload a rule while a higher-priority table-0 rule
// that overlaps it (`rules_overlap`) stays in software or under-matches in the NIC: the NIC would
// apply the lower rule to frames software gives to the higher one.
//
// Actions. A rule whose only action is `drop` becomes DROP: the frame never reaches software, so
// rule and port drop counters do not see it. Any other rule becomes MARK(mark) + PASSTHRU: the
// NIC tags the frame (dataplane/offload_mark.h) so the worker can skip the table-0 lookup; the
// rule's actions still run in software.
#pragma once

#include <rte_flow.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "dataplane/result.h"
#include "dataplane/rule.h"

namespace ferry {

/// An rte_flow rule with the storage its items and actions point into. Move-only: the specs
/// live on the heap, so the pointers stay valid when the object moves.
class FlowTranslation {
public:
    FlowTranslation();
    ~FlowTranslation();
    FlowTranslation(FlowTranslation&&) noexcept;
    FlowTranslation& operator=(FlowTranslation&&) noexcept;
    FlowTranslation(const FlowTranslation&) = delete;
    FlowTranslation& operator=(const FlowTranslation&) = delete;

    const rte_flow_attr& attr() const { return attr_; }
    /// Items, the last one RTE_FLOW_ITEM_TYPE_END.
    const std::vector<rte_flow_item>& pattern() const { return pattern_; }
    /// Actions, the last one RTE_FLOW_ACTION_TYPE_END.
    const std::vector<rte_flow_action>& actions() const { return actions_; }
    /// Whether the action list is DROP (else MARK + PASSTHRU).
    bool is_drop() const;

private:
    struct Storage;
    friend Result<FlowTranslation> translate_rule(const CompiledRule&, uint32_t, uint32_t);

    rte_flow_attr attr_{};
    std::unique_ptr<Storage> storage_;
    std::vector<rte_flow_item> pattern_;
    std::vector<rte_flow_action> actions_;
};

/// Translates one compiled entry. Context: control.
/// @param mark the MARK id for non-drop rules (the caller's choice, e.g. rule slot + 1: some
///        PMDs reserve 0 or the largest ids)
/// @param priority_rank the rte_flow priority: 0 for the highest software priority among the
///        caller's table-0 rules, 1 for the next distinct one, and so on (see priority_rank).
///        rte_flow orders lower values first and devices have few levels, so ranks rather than
///        the raw int32 priorities go to the device.
/// @return the translation, or kInvalidParams with the reason: a table other than 0, or ct_*
///         fields ("ct fields cannot be offloaded"), or L3/L4 fields without the protocol that
///         carries them. in_port is ignored: the caller installs the flow on that port only.
Result<FlowTranslation> translate_rule(const CompiledRule& rule, uint32_t mark,
                                       uint32_t priority_rank);

/// The rank of `priority` among `priorities` (any order, duplicates allowed): the number of
/// distinct values greater than it. Context: control.
uint32_t priority_rank(int32_t priority, std::span<const int32_t> priorities);

/// Whether some key matches both rules (their masked values agree wherever both masks have
/// bits). Context: control.
bool rules_overlap(const CompiledRule& a, const CompiledRule& b);

}  // namespace ferry
