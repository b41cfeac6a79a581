// Drop reasons: the one list below generates the enum, the counter names (the same on the control
// socket, in telemetry and in the Prometheus exporter) and their one-line descriptions, VPP's
// foreach_*_error habit. `ferryd --print-counters` and the `stats.describe` method publish it;
// docs/control-api.md lists it, and tests/functional/test_counter_docs.py fails when the two
// disagree. Names are an interface: add reasons, never rename one.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace ferry {

// _(enumerator, name, description)
#define FERRY_FOREACH_DROP_REASON(_)                                                             \
    _(kRunt, "runt", "Shorter than an Ethernet header.")                                         \
    _(kBadVlan, "bad_vlan", "VLAN tag header truncated.")                                        \
    _(kBadL3, "bad_l3", "IPv4/IPv6 header truncated or inconsistent.")                           \
    _(kBadL4, "bad_l4", "TCP/UDP/ICMP header truncated.")                                        \
    _(kVlanNotAllowed, "vlan_not_allowed", "VLAN not carried by the ingress port.")              \
    _(kHairpin, "hairpin", "The destination is the ingress port.")                               \
    _(kNoDestination, "no_destination", "Flood with no other member of the VLAN.")               \
    _(kPortDown, "port_down", "Egress port removed or its link down.")                           \
    _(kTxFull, "tx_full", "Egress queue full after the tx buffer flush.")                        \
    _(kNoMbuf, "no_mbuf", "A flood copy could not get a packet buffer.")                         \
    _(kNoRule, "no_rule", "No rule of a (non-empty) table matched.")                             \
    _(kRuleDrop, "rule_drop", "A rule's drop action, or a rule that sends the packet nowhere.")  \
    _(kMeter, "meter", "A meter marked the packet red.")                                         \
    _(kCtLimit, "ct_limit", "A zone's connection limit refused a commit.")                       \
    _(kCtFull, "ct_full", "Connection table full, or no free NAT address and port.")             \
    _(kCtHandoff, "ct_handoff", "The ring to the connection's owner worker was full.")           \
    _(kDpiDrop, "dpi_drop",                                                                      \
      "Payload inspection matched a drop pattern in this packet or earlier in its connection.")  \
    _(kCtMigrating, "ct_migrating",                                                              \
      "A connection migrating here whose migration has not committed yet.")                      \
    _(kVlanAfterPriorityTag, "vlan_after_priority_tag",                                          \
      "A VLAN tag behind a priority tag (VID 0): an attempt to pick a VLAN past the port's.")    \
    _(kVlanTooDeep, "vlan_too_deep", "More VLAN tags than the two the parser reads.")            \
    _(kPortSecMac, "port_sec_mac", "Port security: the source MAC is not the port's.")           \
    _(kPortSecIp, "port_sec_ip", "Port security: the source IP is not allowed for the MAC.")     \
    _(kPortSecArp, "port_sec_arp", "Port security: ARP for a (MAC, IP) the port may not claim.") \
    _(kPortSecNd, "port_sec_nd",                                                                 \
      "Port security: a Neighbor Solicitation/Advertisement claiming an address or MAC the "     \
      "port may not, or malformed.")                                                             \
    _(kPortSecRa, "port_sec_ra", "Port security: a Router Advertisement or Redirect from a VM.") \
    _(kMtuExceeded, "mtu_exceeded",                                                              \
      "The frame's L3 packet is larger than the MTU of the port it came in on or would leave.")  \
    _(kSplitHeaders, "split_headers",                                                            \
      "A frame in several segments whose headers do not all lie in the first.")                  \
    _(kCtFragBad, "ct_frag_bad",                                                                 \
      "An IP fragment conntrack cannot reassemble: empty, a non-last one not a multiple of 8 "   \
      "bytes, past 65,535 bytes, an end that contradicts its datagram's last fragment, or a "    \
      "wrong IPv4 header checksum.")                                                             \
    _(kCtFragDuplicate, "ct_frag_duplicate",                                                     \
      "An IP fragment repeating one of its datagram's held fragments exactly.")                  \
    _(kCtFragOverlap, "ct_frag_overlap",                                                         \
      "Fragments of a datagram that overlapped another of its fragments (all of it dropped).")   \
    _(kCtFragTooMany, "ct_frag_too_many",                                                        \
      "Fragments of a datagram with more fragments or bytes than one may have (all dropped).")   \
    _(kCtFragFull, "ct_frag_full",                                                               \
      "An IP fragment refused: the worker holds as many datagrams or fragments as it may.")      \
    _(kCtFragTimeout, "ct_frag_timeout",                                                         \
      "Fragments of a datagram that was not complete within the reassembly timeout.")

enum class DropReason : uint8_t {
#define FERRY_DROP_REASON_ENUM(e, name, description) e,
    FERRY_FOREACH_DROP_REASON(FERRY_DROP_REASON_ENUM)
#undef FERRY_DROP_REASON_ENUM
        kCount
};

inline constexpr size_t kDropReasonCount = static_cast<size_t>(DropReason::kCount);

/// A drop reason's counter name and what it counts.
struct DropReasonInfo {
    std::string_view name;
    std::string_view description;
};

inline constexpr std::array<DropReasonInfo, kDropReasonCount> kDropReasons = {{
#define FERRY_DROP_REASON_INFO(e, name, description) {name, description},
    FERRY_FOREACH_DROP_REASON(FERRY_DROP_REASON_INFO)
#undef FERRY_DROP_REASON_INFO
}};

/// Name of a drop reason as shown in counters. Context: any.
constexpr std::string_view drop_reason_name(DropReason r) {
    return kDropReasons[static_cast<size_t>(r)].name;
}

}  // namespace ferry
