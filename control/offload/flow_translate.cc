#include "control/offload/flow_translate.h"
#include "dataplane/ether_type.h"

#include <netinet/in.h>
#include <rte_byteorder.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

namespace ferry {

namespace {

constexpr uint16_t kVidMask = 0x0fff;

Error untranslatable(std::string reason) {
    return make_error(ErrorCode::kInvalidParams, std::move(reason));
}

bool any_bits(const uint8_t* bytes, size_t n) {
    return std::any_of(bytes, bytes + n, [](uint8_t b) { return b != 0; });
}

}  // namespace

/// Spec and mask ([0], [1]) of every item kind a translation may use, zero unless used.
struct FlowTranslation::Storage {
    rte_flow_item_eth eth[2];
    rte_flow_item_vlan vlan[2];
    rte_flow_item_ipv4 ipv4[2];
    rte_flow_item_ipv6 ipv6[2];
    rte_flow_item_tcp tcp[2];
    rte_flow_item_udp udp[2];
    rte_flow_item_sctp sctp[2];
    rte_flow_item_icmp icmp[2];
    rte_flow_item_icmp6 icmp6[2];
    rte_flow_action_mark mark;
};

FlowTranslation::FlowTranslation() : storage_(std::make_unique<Storage>()) {}
FlowTranslation::~FlowTranslation() = default;
FlowTranslation::FlowTranslation(FlowTranslation&&) noexcept = default;
FlowTranslation& FlowTranslation::operator=(FlowTranslation&&) noexcept = default;

bool FlowTranslation::is_drop() const {
    return !actions_.empty() && actions_[0].type == RTE_FLOW_ACTION_TYPE_DROP;
}

Result<FlowTranslation> translate_rule(const CompiledRule& rule, uint32_t mark,
                                       uint32_t priority_rank) {
    if (rule.table != 0) {
        return untranslatable("only table 0 rules can be offloaded (table " +
                              std::to_string(rule.table) + ")");
    }
    const FlowKey& v = rule.value;
    const FlowKey& m = rule.mask;
    if (m.ct_state != 0 || m.ct_zone != 0 || m.ct_mark != 0) {
        return untranslatable("ct fields cannot be offloaded");
    }

    FlowTranslation t;
    FlowTranslation::Storage& s = *t.storage_;
    t.attr_.group = 0;
    t.attr_.priority = priority_rank;
    t.attr_.ingress = 1;
    t.pattern_.reserve(5);
    const auto add = [&t](rte_flow_item_type type, const void* spec, const void* mask) {
        t.pattern_.push_back({.type = type, .spec = spec, .last = nullptr, .mask = mask});
    };

    // The L3 family comes from ip_version, or from an exact IPv4/IPv6 ethertype.
    uint8_t family = 0;
    if (m.ip_version != 0) {
        family = v.ip_version;
    } else if (m.ethertype == 0xffff && v.ethertype == kEtherTypeIpv4) {
        family = 4;
    } else if (m.ethertype == 0xffff && v.ethertype == kEtherTypeIpv6) {
        family = 6;
    }
    const bool l4 = m.l4_src != 0 || m.l4_dst != 0 || m.tcp_flags != 0;
    const bool l3 = m.ip_version != 0 || m.ip_proto != 0 || any_bits(m.ip_src, 16) ||
                    any_bits(m.ip_dst, 16) || l4;
    if (l3 && m.ip_version != 0 && m.ip_version != 0xff) {
        return untranslatable("a partial ip_version mask cannot be offloaded");
    }
    // The ethertype after the tags; an IP rule without one names its family's, so the pattern
    // reads the same on every PMD ("eth type is 0x0800 / ipv4").
    uint16_t type_value = v.ethertype;
    uint16_t type_mask = m.ethertype;
    if (l3 && type_mask == 0 && (family == 4 || family == 6)) {
        type_value = family == 4 ? kEtherTypeIpv4 : kEtherTypeIpv6;
        type_mask = 0xffff;
    }

    // L2. A type in the ETH item means untagged frames only; with neither a type nor
    // has_vlan, tagged and untagged frames match (rte_flow.h, rte_flow_item_eth).
    std::memcpy(s.eth[0].hdr.dst_addr.addr_bytes, v.eth_dst, 6);
    std::memcpy(s.eth[1].hdr.dst_addr.addr_bytes, m.eth_dst, 6);
    std::memcpy(s.eth[0].hdr.src_addr.addr_bytes, v.eth_src, 6);
    std::memcpy(s.eth[1].hdr.src_addr.addr_bytes, m.eth_src, 6);
    const bool any_vlan = m.vlan == 0;
    const bool no_vlan = m.vlan == 0xffff && v.vlan == kNoVlan;
    if (!any_vlan && !no_vlan && ((m.vlan & 0xf000) != 0xf000 || (v.vlan & 0xf000) != 0)) {
        char text[64];
        snprintf(text, sizeof(text), "vlan 0x%04x/0x%04x cannot be offloaded", v.vlan, m.vlan);
        return untranslatable(text);
    }
    if (any_vlan || no_vlan) {
        s.eth[0].hdr.ether_type = rte_cpu_to_be_16(type_value);
        s.eth[1].hdr.ether_type = rte_cpu_to_be_16(type_mask);
        if (no_vlan && type_mask == 0) {
            s.eth[0].has_vlan = 0;  // `"vlan": "none"` alone: say it outright
            s.eth[1].has_vlan = 1;
        }
        add(RTE_FLOW_ITEM_TYPE_ETH, &s.eth[0], &s.eth[1]);
    } else {
        add(RTE_FLOW_ITEM_TYPE_ETH, &s.eth[0], &s.eth[1]);
        s.vlan[0].hdr.vlan_tci = rte_cpu_to_be_16(v.vlan & kVidMask);
        s.vlan[1].hdr.vlan_tci = rte_cpu_to_be_16(m.vlan & kVidMask);
        s.vlan[0].hdr.eth_proto = rte_cpu_to_be_16(type_value);
        s.vlan[1].hdr.eth_proto = rte_cpu_to_be_16(type_mask);
        add(RTE_FLOW_ITEM_TYPE_VLAN, &s.vlan[0], &s.vlan[1]);
    }

    if (l3 && family == 4) {
        std::memcpy(&s.ipv4[0].hdr.src_addr, v.ip_src, 4);
        std::memcpy(&s.ipv4[1].hdr.src_addr, m.ip_src, 4);
        std::memcpy(&s.ipv4[0].hdr.dst_addr, v.ip_dst, 4);
        std::memcpy(&s.ipv4[1].hdr.dst_addr, m.ip_dst, 4);
        s.ipv4[0].hdr.next_proto_id = v.ip_proto;
        s.ipv4[1].hdr.next_proto_id = m.ip_proto;
        add(RTE_FLOW_ITEM_TYPE_IPV4, &s.ipv4[0], &s.ipv4[1]);
    } else if (l3 && family == 6) {
        std::memcpy(s.ipv6[0].hdr.src_addr, v.ip_src, 16);
        std::memcpy(s.ipv6[1].hdr.src_addr, m.ip_src, 16);
        std::memcpy(s.ipv6[0].hdr.dst_addr, v.ip_dst, 16);
        std::memcpy(s.ipv6[1].hdr.dst_addr, m.ip_dst, 16);
        s.ipv6[0].hdr.proto = v.ip_proto;
        s.ipv6[1].hdr.proto = m.ip_proto;
        add(RTE_FLOW_ITEM_TYPE_IPV6, &s.ipv6[0], &s.ipv6[1]);
    } else if (l3) {
        return untranslatable("IP fields without IP version 4 or 6 cannot be offloaded");
    }

    // L4: ports (ICMP: type and code) in host order in the key, network order in rte_flow.
    if (l4) {
        if (m.ip_proto != 0xff) {
            return untranslatable("L4 fields without an exact ip_proto cannot be offloaded");
        }
        if (m.tcp_flags != 0 && v.ip_proto != IPPROTO_TCP) {
            return untranslatable("tcp_flags without ip_proto tcp cannot be offloaded");
        }
        // The headers are packed: assign the fields, never take their addresses.
        const auto ports = [&](auto& spec, auto& mask) {
            spec.hdr.src_port = rte_cpu_to_be_16(v.l4_src);
            spec.hdr.dst_port = rte_cpu_to_be_16(v.l4_dst);
            mask.hdr.src_port = rte_cpu_to_be_16(m.l4_src);
            mask.hdr.dst_port = rte_cpu_to_be_16(m.l4_dst);
        };
        switch (v.ip_proto) {
            case IPPROTO_TCP:
                ports(s.tcp[0], s.tcp[1]);
                s.tcp[0].hdr.tcp_flags = v.tcp_flags;
                s.tcp[1].hdr.tcp_flags = m.tcp_flags;
                add(RTE_FLOW_ITEM_TYPE_TCP, &s.tcp[0], &s.tcp[1]);
                break;
            case IPPROTO_UDP:
                ports(s.udp[0], s.udp[1]);
                add(RTE_FLOW_ITEM_TYPE_UDP, &s.udp[0], &s.udp[1]);
                break;
            case IPPROTO_SCTP:
                ports(s.sctp[0], s.sctp[1]);
                add(RTE_FLOW_ITEM_TYPE_SCTP, &s.sctp[0], &s.sctp[1]);
                break;
            case IPPROTO_ICMP:
            case IPPROTO_ICMPV6:
                if (v.l4_src > 0xff || v.l4_dst > 0xff) {
                    return untranslatable("ICMP type or code above 255 cannot be offloaded");
                }
                if (v.ip_proto == IPPROTO_ICMP) {
                    s.icmp[0].hdr.icmp_type = static_cast<uint8_t>(v.l4_src);
                    s.icmp[1].hdr.icmp_type = static_cast<uint8_t>(m.l4_src);
                    s.icmp[0].hdr.icmp_code = static_cast<uint8_t>(v.l4_dst);
                    s.icmp[1].hdr.icmp_code = static_cast<uint8_t>(m.l4_dst);
                    add(RTE_FLOW_ITEM_TYPE_ICMP, &s.icmp[0], &s.icmp[1]);
                } else {
                    s.icmp6[0].type = static_cast<uint8_t>(v.l4_src);
                    s.icmp6[1].type = static_cast<uint8_t>(m.l4_src);
                    s.icmp6[0].code = static_cast<uint8_t>(v.l4_dst);
                    s.icmp6[1].code = static_cast<uint8_t>(m.l4_dst);
                    add(RTE_FLOW_ITEM_TYPE_ICMP6, &s.icmp6[0], &s.icmp6[1]);
                }
                break;
            default:
                return untranslatable("L4 fields of ip_proto " + std::to_string(v.ip_proto) +
                                      " cannot be offloaded");
        }
    }
    add(RTE_FLOW_ITEM_TYPE_END, nullptr, nullptr);

    t.actions_.reserve(3);
    if (rule.n_actions == 1 && rule.actions[0].type == ActionType::kDrop) {
        t.actions_.push_back({.type = RTE_FLOW_ACTION_TYPE_DROP, .conf = nullptr});
    } else {
        s.mark.id = mark;
        t.actions_.push_back({.type = RTE_FLOW_ACTION_TYPE_MARK, .conf = &s.mark});
        t.actions_.push_back({.type = RTE_FLOW_ACTION_TYPE_PASSTHRU, .conf = nullptr});
    }
    t.actions_.push_back({.type = RTE_FLOW_ACTION_TYPE_END, .conf = nullptr});
    return t;
}

uint32_t priority_rank(int32_t priority, std::span<const int32_t> priorities) {
    std::vector<int32_t> higher;
    for (int32_t p : priorities) {
        if (p > priority) higher.push_back(p);
    }
    std::sort(higher.begin(), higher.end());
    return static_cast<uint32_t>(std::unique(higher.begin(), higher.end()) - higher.begin());
}

bool rules_overlap(const CompiledRule& a, const CompiledRule& b) {
    const auto* va = reinterpret_cast<const uint8_t*>(&a.value);
    const auto* ma = reinterpret_cast<const uint8_t*>(&a.mask);
    const auto* vb = reinterpret_cast<const uint8_t*>(&b.value);
    const auto* mb = reinterpret_cast<const uint8_t*>(&b.mask);
    for (size_t i = 0; i < sizeof(FlowKey); ++i) {
        if (((va[i] ^ vb[i]) & ma[i] & mb[i]) != 0) return false;
    }
    return true;
}

}  // namespace ferry
