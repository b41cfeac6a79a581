// Drop reasons: one list gives both the enum and the counter names, so a new reason can never
// be counted without a name (VPP's error-list habit, without a macro doing the work).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace ferry {

enum class DropReason : uint8_t {
    kRunt,                  // shorter than an Ethernet header
    kBadVlan,               // VLAN tag header truncated
    kBadL3,                 // IPv4/IPv6 header truncated or inconsistent
    kBadL4,                 // TCP/UDP/ICMP header truncated
    kVlanNotAllowed,        // VLAN not carried by the ingress port
    kHairpin,               // destination is the ingress port
    kNoDestination,         // flood with no other member of the VLAN
    kPortDown,              // egress port removed or link down
    kTxFull,                // egress queue full after the tx buffer flush
    kNoMbuf,                // flood copy could not get an mbuf
    kNoRule,                // no rule of a (non-empty) table matched
    kRuleDrop,              // a rule's drop action, or a rule that sends the packet nowhere
    kMeter,                 // a meter marked the packet red
    kCtLimit,               // ct(commit) refused: the zone's connection limit is reached
    kCtFull,                // ct(commit) refused: connection table full or no free NAT address/port
    kCtHandoff,             // the ring to the connection's owner worker was full
    kDpiDrop,               // payload inspection matched a drop pattern (this or an earlier packet)
    kCtMigrating,           // the connection is migrating here and its migration has not committed
    kVlanAfterPriorityTag,  // a priority tag (VID 0) with another VLAN tag behind it
    kVlanTooDeep,           // more VLAN tags than the parser reads
    kCount
};

inline constexpr std::array<std::string_view, static_cast<size_t>(DropReason::kCount)>
    kDropReasonNames = {"runt",
                        "bad_vlan",
                        "bad_l3",
                        "bad_l4",
                        "vlan_not_allowed",
                        "hairpin",
                        "no_destination",
                        "port_down",
                        "tx_full",
                        "no_mbuf",
                        "no_rule",
                        "rule_drop",
                        "meter",
                        "ct_limit",
                        "ct_full",
                        "ct_handoff",
                        "dpi_drop",
                        "ct_migrating",
                        "vlan_after_priority_tag",
                        "vlan_too_deep"};
static_assert(kDropReasonNames.size() == static_cast<size_t>(DropReason::kCount));

inline constexpr size_t kDropReasonCount = static_cast<size_t>(DropReason::kCount);

/// Name of a drop reason as shown in counters. Context: any.
constexpr std::string_view drop_reason_name(DropReason r) {
    return kDropReasonNames[static_cast<size_t>(r)];
}

}  // namespace ferry
