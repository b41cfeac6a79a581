// rte_flow translation of compiled rules (item types in order, spec and mask bytes in network
// order, actions, refusals, priority ranks) and the offload manager against devices without
// flow support: a net_ring port, and a net_tap port when /dev/net/tun is usable.
#include <gtest/gtest.h>
#include <rte_dev.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>
#include <vector>

#include "control/offload/flow_translate.h"
#include "control/offload/offload_manager.h"
#include "dataplane/offload_mark.h"

namespace ferry {
namespace {

/// A table-0 rule matching everything, with one `normal` action.
CompiledRule any_rule() {
    CompiledRule r{};
    r.n_actions = 1;
    r.actions[0].type = ActionType::kNormal;
    return r;
}

CompiledRule with_drop(CompiledRule r) {
    r.n_actions = 1;
    r.actions[0] = Action{ActionType::kDrop, 0, 0, 0};
    return r;
}

void match_ipv4_udp_dst(CompiledRule& r, uint16_t port) {
    r.value.ethertype = 0x0800;
    r.mask.ethertype = 0xffff;
    r.value.ip_version = 4;
    r.mask.ip_version = 0xff;
    r.value.ip_proto = 17;
    r.mask.ip_proto = 0xff;
    r.value.l4_dst = port;
    r.mask.l4_dst = 0xffff;
}

std::vector<rte_flow_item_type> item_types(const FlowTranslation& t) {
    std::vector<rte_flow_item_type> types;
    for (const rte_flow_item& item : t.pattern()) types.push_back(item.type);
    return types;
}

std::vector<rte_flow_action_type> action_types(const FlowTranslation& t) {
    std::vector<rte_flow_action_type> types;
    for (const rte_flow_action& a : t.actions()) types.push_back(a.type);
    return types;
}

template <class T>
const T& spec(const FlowTranslation& t, size_t i) {
    return *static_cast<const T*>(t.pattern()[i].spec);
}
template <class T>
const T& mask(const FlowTranslation& t, size_t i) {
    return *static_cast<const T*>(t.pattern()[i].mask);
}

/// The two bytes of a big-endian field as they sit in memory.
std::array<uint8_t, 2> bytes_of(rte_be16_t v) {
    std::array<uint8_t, 2> b{};
    std::memcpy(b.data(), &v, 2);
    return b;
}
using Bytes2 = std::array<uint8_t, 2>;

FlowTranslation translate_ok(const CompiledRule& r, uint32_t mark = 7, uint32_t rank = 0) {
    Result<FlowTranslation> t = translate_rule(r, mark, rank);
    EXPECT_TRUE(t.ok()) << (t.ok() ? "" : t.error().message);
    return std::move(*t);
}

TEST(FlowTranslate, EthAddressesAndTypeUntaggedOnly) {
    CompiledRule r = any_rule();
    const uint8_t dst[6] = {0x02, 0, 0, 0, 0, 0x01};
    const uint8_t src[6] = {0x02, 0x11, 0x22, 0, 0, 0};
    const uint8_t src_mask[6] = {0xff, 0xff, 0xff, 0, 0, 0};
    std::memcpy(r.value.eth_dst, dst, 6);
    std::memset(r.mask.eth_dst, 0xff, 6);
    std::memcpy(r.value.eth_src, src, 6);
    std::memcpy(r.mask.eth_src, src_mask, 6);
    r.value.ethertype = 0x0806;
    r.mask.ethertype = 0xffff;
    FlowTranslation t = translate_ok(r);
    ASSERT_EQ(item_types(t), (std::vector{RTE_FLOW_ITEM_TYPE_ETH, RTE_FLOW_ITEM_TYPE_END}));
    const auto& s = spec<rte_flow_item_eth>(t, 0);
    const auto& m = mask<rte_flow_item_eth>(t, 0);
    EXPECT_EQ(0, std::memcmp(s.hdr.dst_addr.addr_bytes, dst, 6));
    EXPECT_EQ(0, std::memcmp(s.hdr.src_addr.addr_bytes, src, 6));
    EXPECT_EQ(0, std::memcmp(m.hdr.src_addr.addr_bytes, src_mask, 6));
    EXPECT_EQ(m.hdr.dst_addr.addr_bytes[5], 0xff);
    EXPECT_EQ(bytes_of(s.hdr.ether_type), (Bytes2{0x08, 0x06}));
    EXPECT_EQ(bytes_of(m.hdr.ether_type), (Bytes2{0xff, 0xff}));
    // A type (not a TPID) already means untagged frames only: has_vlan stays open, so PMDs
    // that do not know the bit still take the rule.
    EXPECT_EQ(m.has_vlan, 0u);
    EXPECT_EQ(t.pattern()[0].last, nullptr);
}

TEST(FlowTranslate, PureL2RuleMatchesTaggedAndUntagged) {
    CompiledRule r = any_rule();
    r.value.eth_dst[0] = 0x01;
    r.mask.eth_dst[0] = 0x01;  // multicast bit
    FlowTranslation t = translate_ok(r);
    ASSERT_EQ(item_types(t), (std::vector{RTE_FLOW_ITEM_TYPE_ETH, RTE_FLOW_ITEM_TYPE_END}));
    EXPECT_EQ(mask<rte_flow_item_eth>(t, 0).has_vlan, 0u);
    EXPECT_EQ(bytes_of(mask<rte_flow_item_eth>(t, 0).hdr.ether_type), (Bytes2{0, 0}));
    EXPECT_EQ(mask<rte_flow_item_eth>(t, 0).hdr.dst_addr.addr_bytes[0], 0x01);
}

TEST(FlowTranslate, VlanNoneIsUntagged) {
    CompiledRule r = any_rule();
    r.value.vlan = kNoVlan;
    r.mask.vlan = 0xffff;
    FlowTranslation t = translate_ok(r);
    ASSERT_EQ(item_types(t), (std::vector{RTE_FLOW_ITEM_TYPE_ETH, RTE_FLOW_ITEM_TYPE_END}));
    EXPECT_EQ(spec<rte_flow_item_eth>(t, 0).has_vlan, 0u);
    EXPECT_EQ(mask<rte_flow_item_eth>(t, 0).has_vlan, 1u);
    // With a type, the type says "untagged" already.
    r.value.ethertype = 0x0806;
    r.mask.ethertype = 0xffff;
    EXPECT_EQ(mask<rte_flow_item_eth>(translate_ok(r), 0).has_vlan, 0u);
}

TEST(FlowTranslate, VlanVidAndInnerType) {
    CompiledRule r = any_rule();
    r.value.vlan = 10;
    r.mask.vlan = 0xffff;
    r.value.ethertype = 0x86dd;
    r.mask.ethertype = 0xffff;
    FlowTranslation t = translate_ok(r);
    ASSERT_EQ(item_types(t), (std::vector{RTE_FLOW_ITEM_TYPE_ETH, RTE_FLOW_ITEM_TYPE_VLAN,
                                          RTE_FLOW_ITEM_TYPE_END}));
    EXPECT_EQ(mask<rte_flow_item_eth>(t, 0).has_vlan, 0u);
    EXPECT_EQ(bytes_of(mask<rte_flow_item_eth>(t, 0).hdr.ether_type), (Bytes2{0, 0}));
    const auto& s = spec<rte_flow_item_vlan>(t, 1);
    const auto& m = mask<rte_flow_item_vlan>(t, 1);
    EXPECT_EQ(bytes_of(s.hdr.vlan_tci), (Bytes2{0x00, 0x0a}));
    EXPECT_EQ(bytes_of(m.hdr.vlan_tci), (Bytes2{0x0f, 0xff}));  // the VID, not PCP/DEI
    EXPECT_EQ(bytes_of(s.hdr.eth_proto), (Bytes2{0x86, 0xdd}));
    EXPECT_EQ(bytes_of(m.hdr.eth_proto), (Bytes2{0xff, 0xff}));
}

TEST(FlowTranslate, OddVlanMaskRefused) {
    CompiledRule r = any_rule();
    r.value.vlan = 10;
    r.mask.vlan = 0x00ff;
    Result<FlowTranslation> t = translate_rule(r, 1, 0);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.error().message.find("vlan"), std::string::npos) << t.error().message;
}

TEST(FlowTranslate, Ipv4AddressesProtoAndUdpPorts) {
    CompiledRule r = any_rule();
    match_ipv4_udp_dst(r, 9999);
    r.value.l4_src = 0x0050;
    r.mask.l4_src = 0xfff0;
    const uint8_t src[4] = {10, 0, 0, 0}, src_mask[4] = {0xff, 0, 0, 0};
    const uint8_t dst[4] = {192, 168, 1, 1}, dst_mask[4] = {0xff, 0xff, 0xff, 0xff};
    std::memcpy(r.value.ip_src, src, 4);
    std::memcpy(r.mask.ip_src, src_mask, 4);
    std::memcpy(r.value.ip_dst, dst, 4);
    std::memcpy(r.mask.ip_dst, dst_mask, 4);
    FlowTranslation t = translate_ok(r);
    ASSERT_EQ(item_types(t), (std::vector{RTE_FLOW_ITEM_TYPE_ETH, RTE_FLOW_ITEM_TYPE_IPV4,
                                          RTE_FLOW_ITEM_TYPE_UDP, RTE_FLOW_ITEM_TYPE_END}));
    EXPECT_EQ(bytes_of(spec<rte_flow_item_eth>(t, 0).hdr.ether_type), (Bytes2{0x08, 0x00}));
    const auto& s4 = spec<rte_flow_item_ipv4>(t, 1);
    const auto& m4 = mask<rte_flow_item_ipv4>(t, 1);
    EXPECT_EQ(0, std::memcmp(&s4.hdr.src_addr, src, 4));
    EXPECT_EQ(0, std::memcmp(&m4.hdr.src_addr, src_mask, 4));
    EXPECT_EQ(0, std::memcmp(&s4.hdr.dst_addr, dst, 4));
    EXPECT_EQ(0, std::memcmp(&m4.hdr.dst_addr, dst_mask, 4));
    EXPECT_EQ(s4.hdr.next_proto_id, 17);
    EXPECT_EQ(m4.hdr.next_proto_id, 0xff);
    const auto& su = spec<rte_flow_item_udp>(t, 2);
    const auto& mu = mask<rte_flow_item_udp>(t, 2);
    EXPECT_EQ(bytes_of(su.hdr.dst_port), (Bytes2{0x27, 0x0f}));  // 9999
    EXPECT_EQ(bytes_of(mu.hdr.dst_port), (Bytes2{0xff, 0xff}));
    EXPECT_EQ(bytes_of(su.hdr.src_port), (Bytes2{0x00, 0x50}));
    EXPECT_EQ(bytes_of(mu.hdr.src_port), (Bytes2{0xff, 0xf0}));
}

TEST(FlowTranslate, Ipv6AddressesAndTcpPortsAndFlags) {
    CompiledRule r = any_rule();
    r.value.ip_version = 6;
    r.mask.ip_version = 0xff;
    r.value.ip_proto = 6;
    r.mask.ip_proto = 0xff;
    r.value.ip_dst[0] = 0x20;
    r.value.ip_dst[1] = 0x01;
    r.value.ip_dst[15] = 0x01;
    std::memset(r.mask.ip_dst, 0xff, 16);
    r.value.ip_src[0] = 0xfe;
    r.mask.ip_src[0] = 0xff;
    r.value.l4_dst = 443;
    r.mask.l4_dst = 0xffff;
    r.value.tcp_flags = 0x02;  // +syn-ack
    r.mask.tcp_flags = 0x12;
    FlowTranslation t = translate_ok(r);
    ASSERT_EQ(item_types(t), (std::vector{RTE_FLOW_ITEM_TYPE_ETH, RTE_FLOW_ITEM_TYPE_IPV6,
                                          RTE_FLOW_ITEM_TYPE_TCP, RTE_FLOW_ITEM_TYPE_END}));
    // ip_version alone: the ETH item names the family's ethertype.
    EXPECT_EQ(bytes_of(spec<rte_flow_item_eth>(t, 0).hdr.ether_type), (Bytes2{0x86, 0xdd}));
    EXPECT_EQ(bytes_of(mask<rte_flow_item_eth>(t, 0).hdr.ether_type), (Bytes2{0xff, 0xff}));
    const auto& s6 = spec<rte_flow_item_ipv6>(t, 1);
    const auto& m6 = mask<rte_flow_item_ipv6>(t, 1);
    EXPECT_EQ(0, std::memcmp(s6.hdr.dst_addr, r.value.ip_dst, 16));
    EXPECT_EQ(0, std::memcmp(m6.hdr.dst_addr, r.mask.ip_dst, 16));
    EXPECT_EQ(0, std::memcmp(s6.hdr.src_addr, r.value.ip_src, 16));
    EXPECT_EQ(0, std::memcmp(m6.hdr.src_addr, r.mask.ip_src, 16));
    EXPECT_EQ(s6.hdr.proto, 6);
    EXPECT_EQ(m6.hdr.proto, 0xff);
    const auto& st = spec<rte_flow_item_tcp>(t, 2);
    const auto& mt = mask<rte_flow_item_tcp>(t, 2);
    EXPECT_EQ(bytes_of(st.hdr.dst_port), (Bytes2{0x01, 0xbb}));
    EXPECT_EQ(bytes_of(mt.hdr.src_port), (Bytes2{0, 0}));
    EXPECT_EQ(st.hdr.tcp_flags, 0x02);
    EXPECT_EQ(mt.hdr.tcp_flags, 0x12);
}

TEST(FlowTranslate, SctpPorts) {
    CompiledRule r = any_rule();
    match_ipv4_udp_dst(r, 2905);
    r.value.ip_proto = 132;
    FlowTranslation t = translate_ok(r);
    ASSERT_EQ(item_types(t)[2], RTE_FLOW_ITEM_TYPE_SCTP);
    EXPECT_EQ(bytes_of(spec<rte_flow_item_sctp>(t, 2).hdr.dst_port), (Bytes2{0x0b, 0x59}));
    EXPECT_EQ(bytes_of(mask<rte_flow_item_sctp>(t, 2).hdr.dst_port), (Bytes2{0xff, 0xff}));
}

TEST(FlowTranslate, IcmpTypeAndCode) {
    CompiledRule r = any_rule();
    match_ipv4_udp_dst(r, 0);  // code 0
    r.value.ip_proto = 1;
    r.value.l4_src = 8;  // echo request
    r.mask.l4_src = 0xffff;
    FlowTranslation t = translate_ok(r);
    ASSERT_EQ(item_types(t)[2], RTE_FLOW_ITEM_TYPE_ICMP);
    EXPECT_EQ(spec<rte_flow_item_icmp>(t, 2).hdr.icmp_type, 8);
    EXPECT_EQ(mask<rte_flow_item_icmp>(t, 2).hdr.icmp_type, 0xff);
    EXPECT_EQ(spec<rte_flow_item_icmp>(t, 2).hdr.icmp_code, 0);
    EXPECT_EQ(mask<rte_flow_item_icmp>(t, 2).hdr.icmp_code, 0xff);

    r.value.ip_version = 6;
    r.value.ethertype = 0x86dd;
    r.value.ip_proto = 58;
    r.value.l4_src = 135;  // neighbour solicitation
    FlowTranslation t6 = translate_ok(r);
    ASSERT_EQ(item_types(t6), (std::vector{RTE_FLOW_ITEM_TYPE_ETH, RTE_FLOW_ITEM_TYPE_IPV6,
                                           RTE_FLOW_ITEM_TYPE_ICMP6, RTE_FLOW_ITEM_TYPE_END}));
    EXPECT_EQ(spec<rte_flow_item_icmp6>(t6, 2).type, 135);
    EXPECT_EQ(mask<rte_flow_item_icmp6>(t6, 2).code, 0xff);
}

TEST(FlowTranslate, IpFamilyFromEthertypeAlone) {
    CompiledRule r = any_rule();
    r.value.ethertype = 0x0800;
    r.mask.ethertype = 0xffff;
    r.value.ip_proto = 17;
    r.mask.ip_proto = 0xff;
    FlowTranslation t = translate_ok(r);
    EXPECT_EQ(item_types(t), (std::vector{RTE_FLOW_ITEM_TYPE_ETH, RTE_FLOW_ITEM_TYPE_IPV4,
                                          RTE_FLOW_ITEM_TYPE_END}));
    // An ethertype alone needs no IP item.
    r.mask.ip_proto = 0;
    r.value.ip_proto = 0;
    EXPECT_EQ(item_types(translate_ok(r)),
              (std::vector{RTE_FLOW_ITEM_TYPE_ETH, RTE_FLOW_ITEM_TYPE_END}));
}

TEST(FlowTranslate, FieldsWithoutTheirProtocolRefused) {
    CompiledRule r = any_rule();
    r.value.ip_proto = 6;
    r.mask.ip_proto = 0xff;
    EXPECT_FALSE(translate_rule(r, 1, 0).ok());  // no IP version
    r = any_rule();
    r.value.ip_version = 4;
    r.mask.ip_version = 0xff;
    r.value.l4_dst = 80;
    r.mask.l4_dst = 0xffff;
    Result<FlowTranslation> t = translate_rule(r, 1, 0);  // no ip_proto
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.error().message.find("ip_proto"), std::string::npos);
    r.value.ip_proto = 47;  // GRE has no ports
    r.mask.ip_proto = 0xff;
    EXPECT_FALSE(translate_rule(r, 1, 0).ok());
}

TEST(FlowTranslate, InPortLeftToTheCaller) {
    CompiledRule r = any_rule();
    match_ipv4_udp_dst(r, 53);
    FlowTranslation without = translate_ok(r);
    r.value.in_port = 3;
    r.mask.in_port = 0xffff;
    FlowTranslation with = translate_ok(r);
    EXPECT_EQ(item_types(with), item_types(without));
}

TEST(FlowTranslate, CtFieldsRefused) {
    for (int field = 0; field < 3; ++field) {
        CompiledRule r = any_rule();
        if (field == 0) r.mask.ct_state = 0x02;
        if (field == 1) r.mask.ct_zone = 0xffff;
        if (field == 2) r.mask.ct_mark = 0xff;
        Result<FlowTranslation> t = translate_rule(r, 1, 0);
        ASSERT_FALSE(t.ok());
        EXPECT_EQ(t.error().message, "ct fields cannot be offloaded");
    }
}

TEST(FlowTranslate, OnlyTableZero) {
    CompiledRule r = any_rule();
    r.table = 2;
    Result<FlowTranslation> t = translate_rule(r, 1, 0);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().message, "only table 0 rules can be offloaded (table 2)");
}

TEST(FlowTranslate, DropOnlyBecomesDrop) {
    FlowTranslation t = translate_ok(with_drop(any_rule()));
    EXPECT_TRUE(t.is_drop());
    EXPECT_EQ(action_types(t), (std::vector{RTE_FLOW_ACTION_TYPE_DROP, RTE_FLOW_ACTION_TYPE_END}));
}

TEST(FlowTranslate, OtherActionsBecomeMarkAndPassthru) {
    const ActionType kinds[] = {ActionType::kOutput,   ActionType::kNormal,    ActionType::kFlood,
                                ActionType::kPushVlan, ActionType::kPopVlan,   ActionType::kSetVlan,
                                ActionType::kMeter,    ActionType::kGotoTable, ActionType::kCt,
                                ActionType::kDpi};
    for (ActionType kind : kinds) {
        CompiledRule r = any_rule();
        r.actions[0].type = kind;
        FlowTranslation t = translate_ok(r, 0x1234);
        EXPECT_FALSE(t.is_drop());
        ASSERT_EQ(action_types(t),
                  (std::vector{RTE_FLOW_ACTION_TYPE_MARK, RTE_FLOW_ACTION_TYPE_PASSTHRU,
                               RTE_FLOW_ACTION_TYPE_END}));
        EXPECT_EQ(static_cast<const rte_flow_action_mark*>(t.actions()[0].conf)->id, 0x1234u);
    }
    // Mirror then drop is not "drop only": the mirror copy needs software.
    CompiledRule r = any_rule();
    r.n_actions = 2;
    r.actions[0] = Action{ActionType::kMirror, 0, 1, 0};
    r.actions[1] = Action{ActionType::kDrop, 0, 0, 0};
    EXPECT_FALSE(translate_ok(r).is_drop());
}

TEST(FlowTranslate, AttributesAndPriorityRank) {
    FlowTranslation t = translate_ok(any_rule(), 1, 3);
    EXPECT_EQ(t.attr().priority, 3u);
    EXPECT_EQ(t.attr().group, 0u);
    EXPECT_EQ(t.attr().ingress, 1u);
    EXPECT_EQ(t.attr().egress, 0u);
    EXPECT_EQ(t.attr().transfer, 0u);

    const std::vector<int32_t> priorities = {10, 100, -5, 10};
    EXPECT_EQ(priority_rank(100, priorities), 0u);
    EXPECT_EQ(priority_rank(10, priorities), 1u);
    EXPECT_EQ(priority_rank(-5, priorities), 2u);
    EXPECT_EQ(priority_rank(50, priorities), 1u);  // a priority not yet in the list
    EXPECT_EQ(priority_rank(0, {}), 0u);
}

TEST(FlowTranslate, PointersSurviveMoves) {
    CompiledRule r = any_rule();
    match_ipv4_udp_dst(r, 9999);
    std::vector<FlowTranslation> all;
    for (int i = 0; i < 20; ++i) all.push_back(translate_ok(r, static_cast<uint32_t>(i)));
    for (int i = 0; i < 20; ++i) {
        EXPECT_EQ(bytes_of(spec<rte_flow_item_udp>(all[i], 2).hdr.dst_port), (Bytes2{0x27, 0x0f}));
        EXPECT_EQ(static_cast<const rte_flow_action_mark*>(all[i].actions()[0].conf)->id,
                  static_cast<uint32_t>(i));
    }
}

TEST(FlowTranslate, RulesOverlap) {
    CompiledRule a = any_rule();
    match_ipv4_udp_dst(a, 53);
    CompiledRule b = any_rule();
    b.value.ip_proto = 17;
    b.mask.ip_proto = 0xff;
    EXPECT_TRUE(rules_overlap(a, b));
    b.value.ip_proto = 6;
    EXPECT_FALSE(rules_overlap(a, b));
    EXPECT_TRUE(rules_overlap(a, any_rule()));
}

TEST(FlowTranslate, OffloadMarkReadsFdirId) {
    rte_mbuf m{};
    uint32_t mark = 0;
    EXPECT_FALSE(offload_mark(&m, &mark));
    m.ol_flags = RTE_MBUF_F_RX_FDIR | RTE_MBUF_F_RX_FDIR_ID;
    m.hash.fdir.hi = 42;
    ASSERT_TRUE(offload_mark(&m, &mark));
    EXPECT_EQ(mark, 42u);
}

/// A started port from a pair of rings (the ring PMD has no rte_flow ops).
class RingPort : public testing::Test {
protected:
    void SetUp() override {
        const std::string n = "oft" + std::to_string(getpid());
        pool_ =
            rte_pktmbuf_pool_create((n + "pool").c_str(), 511, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
        ASSERT_NE(pool_, nullptr);
        ring_ = rte_ring_create((n + "r").c_str(), 256, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
        ASSERT_NE(ring_, nullptr);
        const int id = rte_eth_from_rings((n + "p").c_str(), &ring_, 1, &ring_, 1, 0);
        ASSERT_GE(id, 0);
        port_ = static_cast<uint16_t>(id);
        rte_eth_conf conf{};
        ASSERT_EQ(rte_eth_dev_configure(port_, 1, 1, &conf), 0);
        ASSERT_EQ(rte_eth_rx_queue_setup(port_, 0, 128, 0, nullptr, pool_), 0);
        ASSERT_EQ(rte_eth_tx_queue_setup(port_, 0, 128, 0, nullptr), 0);
        ASSERT_EQ(rte_eth_dev_start(port_), 0);
    }
    void TearDown() override {
        rte_eth_dev_stop(port_);
        rte_eth_dev_close(port_);
        rte_ring_free(ring_);
        rte_mempool_free(pool_);
    }

    rte_mempool* pool_ = nullptr;
    rte_ring* ring_ = nullptr;
    uint16_t port_ = 0;
};

TEST_F(RingPort, EveryRuleFallsBackWithAReason) {
    OffloadManager mgr(port_);
    EXPECT_FALSE(mgr.probe_ok());
    EXPECT_FALSE(mgr.takes_drop());
    EXPECT_FALSE(mgr.takes_mark());

    CompiledRule drop = with_drop(any_rule());
    match_ipv4_udp_dst(drop, 9999);
    Status st = mgr.install(1, std::span(&drop, 1), 2, 0);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().message.rfind("device does not take drop: ", 0), 0u) << st.error().message;
    EXPECT_EQ(mgr.state(1), "software: " + st.error().message);
    std::printf("net_ring: %s\n", mgr.state(1).c_str());

    CompiledRule mark = any_rule();
    ASSERT_FALSE(mgr.install(2, std::span(&mark, 1), 3, 0).ok());
    EXPECT_EQ(mgr.state(2).rfind("software: device does not take mark: ", 0), 0u) << mgr.state(2);

    // A translation refusal wins over the device's: the user learns what to change.
    CompiledRule ct = any_rule();
    ct.mask.ct_state = 0x20;
    ASSERT_FALSE(mgr.install(3, std::span(&ct, 1), 4, 0).ok());
    EXPECT_EQ(mgr.state(3), "software: ct fields cannot be offloaded");

    EXPECT_EQ(mgr.state(9), "software: not offered");
    ASSERT_FALSE(mgr.install(4, std::span<const CompiledRule>(), 5, 0).ok());
    mgr.remove(1);
    EXPECT_EQ(mgr.state(1), "software: not offered");
    mgr.remove(1);  // twice is harmless
    mgr.clear();
    EXPECT_EQ(mgr.state(2), "software: not offered");
}

/// net_tap goes through the kernel's tc flower; without /dev/net/tun or root it cannot exist.
TEST(TapPort, ProbeReportsWhatTheKernelTakes) {
    if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0) {
        GTEST_SKIP() << "net_tap needs root and /dev/net/tun";
    }
    const std::string name = "net_tap_oft" + std::to_string(getpid() % 100000);
    const std::string iface = "ftp" + std::to_string(getpid() % 100000);
    if (rte_dev_probe((name + ",iface=" + iface).c_str()) != 0) {
        GTEST_SKIP() << "rte_dev_probe of net_tap failed (driver not loaded?)";
    }
    uint16_t port = 0;
    ASSERT_EQ(rte_eth_dev_get_port_by_name(name.c_str(), &port), 0);
    rte_mempool* pool =
        rte_pktmbuf_pool_create("oft_tap_pool", 511, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    ASSERT_NE(pool, nullptr);
    rte_eth_conf conf{};
    ASSERT_EQ(rte_eth_dev_configure(port, 1, 1, &conf), 0);
    ASSERT_EQ(rte_eth_rx_queue_setup(port, 0, 128, 0, nullptr, pool), 0);
    ASSERT_EQ(rte_eth_tx_queue_setup(port, 0, 128, 0, nullptr), 0);
    ASSERT_EQ(rte_eth_dev_start(port), 0);
    {
        OffloadManager mgr(port);
        CompiledRule drop = with_drop(any_rule());
        match_ipv4_udp_dst(drop, 9999);
        Status d = mgr.install(1, std::span(&drop, 1), 2, 0);
        CompiledRule mark = any_rule();
        match_ipv4_udp_dst(mark, 8888);
        Status m = mgr.install(2, std::span(&mark, 1), 3, 0);
        std::printf("net_tap: probe drop=%d mark=%d; udp drop rule: %s; udp mark rule: %s\n",
                    mgr.takes_drop(), mgr.takes_mark(), mgr.state(1).c_str(), mgr.state(2).c_str());
        for (uint32_t slot : {1u, 2u}) {
            const std::string s = mgr.state(slot);
            EXPECT_TRUE(s == "offloaded" || s.rfind("software: ", 0) == 0) << s;
        }
        EXPECT_EQ(d.ok(), mgr.state(1) == "offloaded");
        EXPECT_EQ(m.ok(), mgr.state(2) == "offloaded");
    }  // destroys whatever was created
    rte_eth_dev_stop(port);
    rte_eth_dev_close(port);
    rte_eal_hotplug_remove("vdev", name.c_str());
    rte_mempool_free(pool);
}

}  // namespace
}  // namespace ferry
