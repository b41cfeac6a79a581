// Unit tests of the tuple-space-search classifier: hand-written rules on each field kind, priority
// and tie rules across and within subtables, table independence and edges; then a randomised
// comparison against a brute-force linear scan using rule_matches().
#include "dataplane/classifier.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace ferry {
namespace {

FlowKey zero_key() {
    FlowKey k;
    std::memset(&k, 0, sizeof(k));
    return k;
}

/// A key as the parser would produce it for an untagged IPv4/TCP packet.
FlowKey base_key() {
    FlowKey k = zero_key();
    k.in_port = 1;
    k.vlan = kNoVlan;
    k.ethertype = 0x0800;
    k.ip_version = 4;
    k.ip_proto = 6;
    k.tcp_flags = 0x02;
    const uint8_t dst[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    const uint8_t src[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
    std::memcpy(k.eth_dst, dst, 6);
    std::memcpy(k.eth_src, src, 6);
    k.l4_src = 40000;
    k.l4_dst = 80;
    const uint8_t s4[4] = {10, 1, 2, 3};
    const uint8_t d4[4] = {192, 168, 7, 9};
    std::memcpy(k.ip_src, s4, 4);
    std::memcpy(k.ip_dst, d4, 4);
    return k;
}

/// Sets the first len bits of an n-byte big-endian field in the mask.
void set_prefix(uint8_t* bytes, unsigned n, unsigned len) {
    for (unsigned i = 0; i < n; ++i) {
        const unsigned bits = len > 8 * i ? std::min(8u, len - 8 * i) : 0;
        bytes[i] = bits == 0 ? 0 : static_cast<uint8_t>(0xff << (8 - bits));
    }
}

/// A rule whose value is the given key masked by mask, as the control thread compiles it.
CompiledRule make_rule(const FlowKey& key, const FlowKey& mask, int32_t priority, uint32_t index,
                       uint8_t table = 0) {
    CompiledRule r;
    std::memset(&r, 0, sizeof(r));
    const auto* k = reinterpret_cast<const uint8_t*>(&key);
    const auto* m = reinterpret_cast<const uint8_t*>(&mask);
    auto* v = reinterpret_cast<uint8_t*>(&r.value);
    for (size_t i = 0; i < sizeof(FlowKey); ++i) v[i] = k[i] & m[i];
    r.mask = mask;
    r.priority = priority;
    r.index = index;
    r.table = table;
    r.n_actions = 1;
    r.actions[0] = Action{ActionType::kOutput, 0, static_cast<uint16_t>(index), 0};
    return r;
}

/// The index of the rule lookup() returns, or -1 for none.
int64_t hit(const Classifier& c, const FlowKey& k, uint8_t table = 0) {
    const CompiledRule* r = c.lookup(k, table);
    return r == nullptr ? -1 : static_cast<int64_t>(r->index);
}

TEST(Classifier, EmptyClassifierMatchesNothing) {
    auto c = Classifier::build({}, 7);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->generation(), 7u);
    EXPECT_EQ(c->rule_count(), 0u);
    for (unsigned t = 0; t < kMaxTables; ++t) {
        EXPECT_TRUE(c->table_empty(t));
        EXPECT_EQ(c->subtable_count(t), 0u);
    }
    EXPECT_EQ(c->lookup(base_key(), 0), nullptr);
    FlowKey keys[3] = {base_key(), zero_key(), base_key()};
    const CompiledRule* out[3] = {nullptr, nullptr, nullptr};
    c->lookup_bulk(keys, 3, 0, out);
    EXPECT_EQ(out[0], nullptr);
    EXPECT_EQ(out[1], nullptr);
    EXPECT_EQ(out[2], nullptr);
}

TEST(Classifier, TableOutOfRangeMatchesNothing) {
    auto c = Classifier::build({make_rule(base_key(), zero_key(), 1, 0, 0)}, 1);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(hit(*c, base_key(), 0), 0);
    EXPECT_EQ(c->lookup(base_key(), kMaxTables), nullptr);
    EXPECT_EQ(c->lookup(base_key(), 255), nullptr);
    EXPECT_TRUE(c->table_empty(kMaxTables));
    EXPECT_EQ(c->subtable_count(kMaxTables), 0u);
    FlowKey keys[2] = {base_key(), base_key()};
    const CompiledRule* out[2] = {c->lookup(base_key(), 0), nullptr};  // must be overwritten
    c->lookup_bulk(keys, 2, kMaxTables, out);
    EXPECT_EQ(out[0], nullptr);
    EXPECT_EQ(out[1], nullptr);
}

TEST(Classifier, RuleInOutOfRangeTableIsIgnored) {
    CompiledRule bad = make_rule(base_key(), zero_key(), 1, 0, 0);
    bad.table = kMaxTables;
    auto c = Classifier::build({bad, make_rule(base_key(), zero_key(), 1, 1, 2)}, 1);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->rule_count(), 1u);
    EXPECT_EQ(hit(*c, base_key(), 2), 1);
}

TEST(Classifier, CatchAllMatchesEverything) {
    auto c = Classifier::build({make_rule(zero_key(), zero_key(), 0, 3)}, 1);
    EXPECT_EQ(hit(*c, base_key()), 3);
    EXPECT_EQ(hit(*c, zero_key()), 3);
    EXPECT_EQ(c->subtable_count(0), 1u);
    EXPECT_FALSE(c->table_empty(0));
}

TEST(Classifier, InPortExact) {
    FlowKey m = zero_key();
    m.in_port = 0xffff;
    FlowKey k = base_key();
    k.in_port = 4;
    auto c = Classifier::build({make_rule(k, m, 10, 0)}, 1);
    EXPECT_EQ(hit(*c, k), 0);
    k.in_port = 5;
    EXPECT_EQ(hit(*c, k), -1);
}

/// The rule a linear scan picks for key in table: highest priority, then lower index.
const CompiledRule* scan(const std::vector<CompiledRule>& rules, const FlowKey& key,
                         uint8_t table) {
    const CompiledRule* best = nullptr;
    for (const CompiledRule& r : rules) {
        if (r.table != table || !rule_matches(r, key)) continue;
        if (best == nullptr || r.priority > best->priority ||
            (r.priority == best->priority && r.index < best->index))
            best = &r;
    }
    return best;
}

TEST(Classifier, InPortOnlyTablesAnswerFromAPortArray) {
    FlowKey port = zero_key();
    port.in_port = 0xffff;
    FlowKey pair = zero_key();
    pair.in_port = 0xfffe;  // ports 4 and 5
    FlowKey k = zero_key();
    std::vector<CompiledRule> rules;
    k.in_port = 1;
    rules.push_back(make_rule(k, port, 10, 0));
    k.in_port = 2;
    rules.push_back(make_rule(k, port, 10, 1));
    k.in_port = 4;
    rules.push_back(make_rule(k, pair, 20, 2));
    k.in_port = 5;
    rules.push_back(make_rule(k, port, 20, 3));  // same priority as the pair's: lower index wins
    rules.push_back(make_rule(zero_key(), zero_key(), 0, 4));  // the catch-all
    k.in_port = 63;
    rules.push_back(make_rule(k, port, 5, 5));
    // Table 1: an in_port rule next to one that reads another field.
    k.in_port = 1;
    rules.push_back(make_rule(k, port, 10, 6, 1));
    FlowKey eth = port;
    eth.ethertype = 0xffff;
    k.ethertype = 0x0800;
    rules.push_back(make_rule(k, eth, 20, 7, 1));
    auto c = Classifier::build(rules, 1);
    ASSERT_NE(c, nullptr);
    EXPECT_TRUE(c->port_indexed(0));
    EXPECT_TRUE(c->direct(0));
    EXPECT_FALSE(c->port_indexed(1));
    EXPECT_FALSE(c->port_indexed(2));  // empty
    EXPECT_TRUE(c->in_port_only(0));
    EXPECT_FALSE(c->in_port_only(1));

    // Every port, in and past the array, with the other fields of a real packet set: the answer
    // is the linear scan's, from lookup, lookup_bulk and lookup_port alike.
    std::vector<FlowKey> keys;
    for (uint16_t p = 0; p < Classifier::kIndexedPorts + 8; ++p) {
        FlowKey q = base_key();
        q.in_port = p;
        keys.push_back(q);
    }
    keys.back().in_port = 0xffff;
    for (uint8_t table : {0, 1}) {
        std::vector<const CompiledRule*> bulk(keys.size());
        c->lookup_bulk(keys.data(), static_cast<unsigned>(keys.size()), table, bulk.data());
        for (size_t i = 0; i < keys.size(); ++i) {
            const CompiledRule* want = scan(rules, keys[i], table);
            const int64_t want_index = want == nullptr ? -1 : int64_t{want->index};
            EXPECT_EQ(hit(*c, keys[i], table), want_index) << keys[i].in_port;
            EXPECT_EQ(bulk[i] == nullptr ? -1 : int64_t{bulk[i]->index}, want_index)
                << keys[i].in_port;
            if (table == 0 && keys[i].in_port < Classifier::kIndexedPorts) {
                EXPECT_EQ(c->lookup_port(keys[i].in_port, 0), bulk[i]) << keys[i].in_port;
            }
        }
    }
    EXPECT_EQ(hit(*c, keys[4]), 2);
    EXPECT_EQ(hit(*c, keys[5]), 2);
    EXPECT_EQ(hit(*c, keys[7]), 4);
}

TEST(Classifier, InPortOnlyNeedsActionsThatReadNoKey) {
    FlowKey port = zero_key();
    port.in_port = 0xffff;
    FlowKey k = zero_key();
    k.in_port = 1;
    const auto with = [&](ActionType type) {
        CompiledRule r = make_rule(k, port, 10, 0);
        r.actions[0] = Action{type, 0, 2, 0};
        return Classifier::build({r, make_rule(zero_key(), zero_key(), 0, 1)}, 1);
    };
    for (ActionType t : {ActionType::kOutput, ActionType::kDrop, ActionType::kFlood,
                         ActionType::kMirror, ActionType::kMeter}) {
        auto c = with(t);
        EXPECT_TRUE(c->port_indexed(0)) << int(t);
        EXPECT_TRUE(c->in_port_only(0)) << int(t);
    }
    for (ActionType t :
         {ActionType::kNormal, ActionType::kPushVlan, ActionType::kPopVlan, ActionType::kSetVlan,
          ActionType::kGotoTable, ActionType::kCt, ActionType::kDpi}) {
        auto c = with(t);
        EXPECT_TRUE(c->port_indexed(0)) << int(t);
        EXPECT_FALSE(c->in_port_only(0)) << int(t);
    }
}

TEST(Classifier, EthAddressesExactAndMasked) {
    FlowKey exact = zero_key();
    std::memset(exact.eth_dst, 0xff, 6);
    FlowKey oui = zero_key();  // eth_src vendor prefix (first three bytes)
    std::memset(oui.eth_src, 0xff, 3);
    FlowKey mcast = zero_key();  // group bit of eth_dst
    mcast.eth_dst[0] = 0x01;
    FlowKey group = zero_key();
    group.eth_dst[0] = 0x01;
    auto c = Classifier::build({make_rule(base_key(), exact, 30, 0),
                                make_rule(base_key(), oui, 20, 1), make_rule(group, mcast, 10, 2)},
                               1);
    EXPECT_EQ(c->subtable_count(0), 3u);
    FlowKey k = base_key();
    EXPECT_EQ(hit(*c, k), 0);
    k.eth_dst[5] ^= 1;  // other unicast destination, same vendor source
    EXPECT_EQ(hit(*c, k), 1);
    k.eth_src[4] ^= 0xff;  // still the same OUI
    EXPECT_EQ(hit(*c, k), 1);
    k.eth_src[2] ^= 1;  // another vendor
    EXPECT_EQ(hit(*c, k), -1);
    k.eth_dst[0] |= 1;  // multicast destination
    EXPECT_EQ(hit(*c, k), 2);
}

TEST(Classifier, VlanExactAndUntagged) {
    FlowKey m = zero_key();
    m.vlan = 0xffff;
    FlowKey tagged = base_key();
    tagged.vlan = 100;
    auto c = Classifier::build({make_rule(tagged, m, 5, 0), make_rule(base_key(), m, 5, 1)}, 1);
    EXPECT_EQ(c->subtable_count(0), 1u);
    EXPECT_EQ(hit(*c, tagged), 0);
    EXPECT_EQ(hit(*c, base_key()), 1);  // kNoVlan
    tagged.vlan = 101;
    EXPECT_EQ(hit(*c, tagged), -1);
}

TEST(Classifier, Ethertype) {
    FlowKey m = zero_key();
    m.ethertype = 0xffff;
    FlowKey arp = base_key();
    arp.ethertype = 0x0806;
    auto c = Classifier::build({make_rule(arp, m, 1, 0)}, 1);
    EXPECT_EQ(hit(*c, arp), 0);
    EXPECT_EQ(hit(*c, base_key()), -1);
}

TEST(Classifier, Ipv4Prefixes) {
    // Priority = prefix length, as an LPM route table would be compiled.
    std::vector<CompiledRule> rules;
    for (unsigned len : {0u, 8u, 24u, 32u}) {
        FlowKey m = zero_key();
        set_prefix(m.ip_dst, 4, len);
        rules.push_back(make_rule(base_key(), m, static_cast<int32_t>(len), len));
    }
    auto c = Classifier::build(rules, 1);
    EXPECT_EQ(c->subtable_count(0), 4u);
    FlowKey k = base_key();  // 192.168.7.9
    EXPECT_EQ(hit(*c, k), 32);
    k.ip_dst[3] = 10;  // 192.168.7.10
    EXPECT_EQ(hit(*c, k), 24);
    k.ip_dst[2] = 8;  // 192.168.8.10
    EXPECT_EQ(hit(*c, k), 8);
    k.ip_dst[0] = 10;  // 10.168.8.10
    EXPECT_EQ(hit(*c, k), 0);
}

TEST(Classifier, Ipv4SourcePrefixNotOnByteBoundary) {
    FlowKey m = zero_key();
    set_prefix(m.ip_src, 4, 12);  // 10.0.0.0/12 covers 10.0.0.0 - 10.15.255.255
    FlowKey v = zero_key();
    v.ip_src[0] = 10;
    auto c = Classifier::build({make_rule(v, m, 1, 0)}, 1);
    FlowKey k = base_key();
    k.ip_src[1] = 15;
    EXPECT_EQ(hit(*c, k), 0);
    k.ip_src[1] = 16;
    EXPECT_EQ(hit(*c, k), -1);
}

TEST(Classifier, Ipv6Prefixes) {
    FlowKey k6 = base_key();
    k6.ethertype = 0x86dd;
    k6.ip_version = 6;
    const uint8_t addr[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x42};
    std::memcpy(k6.ip_src, addr, 16);
    std::vector<CompiledRule> rules;
    for (unsigned len : {0u, 32u, 48u, 65u, 128u}) {
        FlowKey m = zero_key();
        m.ip_version = 0xff;
        set_prefix(m.ip_src, 16, len);
        rules.push_back(make_rule(k6, m, static_cast<int32_t>(len), len));
    }
    auto c = Classifier::build(rules, 1);
    EXPECT_EQ(c->subtable_count(0), 5u);
    FlowKey k = k6;
    EXPECT_EQ(hit(*c, k), 128);
    k.ip_src[15] = 0x43;
    EXPECT_EQ(hit(*c, k), 65);
    k.ip_src[8] = 0x7f;  // bit 65 still clear: same /65
    EXPECT_EQ(hit(*c, k), 65);
    k.ip_src[8] = 0x80;  // bit 64 (the 65th) set
    EXPECT_EQ(hit(*c, k), 48);
    k.ip_src[5] = 2;
    EXPECT_EQ(hit(*c, k), 32);
    k.ip_src[1] = 2;
    EXPECT_EQ(hit(*c, k), 0);
    k.ip_version = 4;  // the /0 rule still requires IPv6
    EXPECT_EQ(hit(*c, k), -1);
}

TEST(Classifier, IpProto) {
    FlowKey m = zero_key();
    m.ip_proto = 0xff;
    FlowKey udp = base_key();
    udp.ip_proto = 17;
    auto c = Classifier::build({make_rule(base_key(), m, 1, 0), make_rule(udp, m, 1, 1)}, 1);
    EXPECT_EQ(hit(*c, base_key()), 0);
    EXPECT_EQ(hit(*c, udp), 1);
    udp.ip_proto = 1;
    EXPECT_EQ(hit(*c, udp), -1);
}

TEST(Classifier, L4PortsExactAndMasked) {
    FlowKey exact = zero_key();
    exact.l4_dst = 0xffff;
    FlowKey range = zero_key();  // l4_src 1024-2047
    range.l4_src = 0xfc00;
    FlowKey v = zero_key();
    v.l4_src = 1024;
    auto c = Classifier::build({make_rule(base_key(), exact, 2, 0), make_rule(v, range, 1, 1)}, 1);
    FlowKey k = base_key();
    EXPECT_EQ(hit(*c, k), 0);
    k.l4_dst = 443;
    EXPECT_EQ(hit(*c, k), -1);
    k.l4_src = 2047;
    EXPECT_EQ(hit(*c, k), 1);
    k.l4_src = 1024;
    EXPECT_EQ(hit(*c, k), 1);
    k.l4_src = 2048;
    EXPECT_EQ(hit(*c, k), -1);
    k.l4_src = 1023;
    EXPECT_EQ(hit(*c, k), -1);
}

TEST(Classifier, TcpFlagsMasked) {
    FlowKey m = zero_key();  // SYN set, ACK clear: a connection attempt
    m.tcp_flags = 0x12;
    FlowKey v = zero_key();
    v.tcp_flags = 0x02;
    auto c = Classifier::build({make_rule(v, m, 1, 0)}, 1);
    FlowKey k = base_key();
    k.tcp_flags = 0x02;
    EXPECT_EQ(hit(*c, k), 0);
    k.tcp_flags = 0x0a;  // SYN|PSH: ignored bit
    EXPECT_EQ(hit(*c, k), 0);
    k.tcp_flags = 0x12;  // SYN|ACK
    EXPECT_EQ(hit(*c, k), -1);
    k.tcp_flags = 0x10;
    EXPECT_EQ(hit(*c, k), -1);
}

TEST(Classifier, ConntrackFields) {
    FlowKey est_mask = zero_key();  // +trk+est-new
    est_mask.ct_state = kCtTracked | kCtEstablished | kCtNew;
    FlowKey est = zero_key();
    est.ct_state = kCtTracked | kCtEstablished;
    FlowKey zone_mask = zero_key();
    zone_mask.ct_zone = 0xffff;
    FlowKey zone = zero_key();
    zone.ct_zone = 7;
    FlowKey mark_mask = zero_key();
    mark_mask.ct_mark = 0x0000ff00;
    FlowKey mark = zero_key();
    mark.ct_mark = 0x00002a00;
    auto c = Classifier::build({make_rule(est, est_mask, 30, 0), make_rule(zone, zone_mask, 20, 1),
                                make_rule(mark, mark_mask, 10, 2)},
                               1);
    FlowKey k = base_key();
    EXPECT_EQ(hit(*c, k), -1);
    k.ct_state = kCtTracked | kCtEstablished | kCtReply;
    EXPECT_EQ(hit(*c, k), 0);
    k.ct_state = kCtTracked | kCtNew;
    EXPECT_EQ(hit(*c, k), -1);
    k.ct_zone = 7;
    EXPECT_EQ(hit(*c, k), 1);
    k.ct_zone = 8;
    k.ct_mark = 0xdead2abe;
    EXPECT_EQ(hit(*c, k), 2);
    k.ct_mark = 0xdead2bbe;
    EXPECT_EQ(hit(*c, k), -1);
}

TEST(Classifier, PriorityWinsAcrossSubtables) {
    FlowKey port_mask = zero_key();
    port_mask.l4_dst = 0xffff;
    FlowKey ip_mask = zero_key();
    set_prefix(ip_mask.ip_dst, 4, 32);
    FlowKey any = zero_key();
    // The broad rule outranks the specific one: specificity does not matter, priority does.
    auto c = Classifier::build(
        {make_rule(base_key(), ip_mask, 5, 0), make_rule(base_key(), port_mask, 50, 1),
         make_rule(base_key(), any, 1, 2)},
        1);
    EXPECT_EQ(c->subtable_count(0), 3u);
    FlowKey k = base_key();
    EXPECT_EQ(hit(*c, k), 1);
    k.l4_dst = 81;
    EXPECT_EQ(hit(*c, k), 0);
    k.ip_dst[3] = 1;
    EXPECT_EQ(hit(*c, k), 2);
}

TEST(Classifier, NegativePriorities) {
    FlowKey m = zero_key();
    m.in_port = 0xffff;
    auto c = Classifier::build(
        {make_rule(base_key(), zero_key(), INT32_MIN, 0), make_rule(base_key(), m, -5, 1)}, 1);
    EXPECT_EQ(hit(*c, base_key()), 1);
    FlowKey k = base_key();
    k.in_port = 9;
    EXPECT_EQ(hit(*c, k), 0);
}

TEST(Classifier, EqualPriorityLowerIndexWins) {
    FlowKey a = zero_key();
    a.in_port = 0xffff;
    FlowKey b = zero_key();
    b.l4_dst = 0xffff;
    // Across subtables, both orders of the input.
    for (bool swap : {false, true}) {
        std::vector<CompiledRule> rules = {make_rule(base_key(), a, 7, 12),
                                           make_rule(base_key(), b, 7, 4)};
        if (swap) std::swap(rules[0], rules[1]);
        auto c = Classifier::build(rules, 1);
        EXPECT_EQ(hit(*c, base_key()), 4);
    }
    // Within one subtable, same value.
    auto c = Classifier::build({make_rule(base_key(), a, 7, 9), make_rule(base_key(), a, 7, 3),
                                make_rule(base_key(), a, 7, 5)},
                               1);
    EXPECT_EQ(hit(*c, base_key()), 3);
}

TEST(Classifier, SameMaskAndValueDifferentPriorities) {
    FlowKey m = zero_key();
    m.ip_proto = 0xff;
    m.l4_dst = 0xffff;
    auto c = Classifier::build({make_rule(base_key(), m, 5, 0), make_rule(base_key(), m, 10, 1),
                                make_rule(base_key(), m, 7, 2)},
                               1);
    EXPECT_EQ(c->rule_count(), 3u);
    EXPECT_EQ(c->subtable_count(0), 1u);
    EXPECT_EQ(hit(*c, base_key()), 1);
}

TEST(Classifier, TablesAreIndependent) {
    FlowKey m = zero_key();
    m.in_port = 0xffff;
    FlowKey m2 = zero_key();
    m2.l4_dst = 0xffff;
    auto c = Classifier::build(
        {make_rule(base_key(), m, 1, 0, 0), make_rule(base_key(), m, 100, 1, 3),
         make_rule(base_key(), m2, 50, 2, 3), make_rule(base_key(), m2, 1, 3, 63)},
        1);
    EXPECT_EQ(c->rule_count(), 4u);
    EXPECT_EQ(hit(*c, base_key(), 0), 0);
    EXPECT_EQ(hit(*c, base_key(), 1), -1);
    EXPECT_EQ(hit(*c, base_key(), 3), 1);
    EXPECT_EQ(hit(*c, base_key(), 63), 3);
    EXPECT_EQ(c->subtable_count(0), 1u);
    EXPECT_EQ(c->subtable_count(1), 0u);
    EXPECT_EQ(c->subtable_count(3), 2u);
    EXPECT_TRUE(c->table_empty(1));
    EXPECT_FALSE(c->table_empty(3));
    FlowKey k = base_key();
    k.in_port = 2;  // only the port-80 rule of table 3 is left there
    EXPECT_EQ(hit(*c, k, 3), 2);
    EXPECT_EQ(hit(*c, k, 0), -1);
}

TEST(Classifier, ResultsPointIntoTheSnapshot) {
    FlowKey m = zero_key();
    m.in_port = 0xffff;
    std::unique_ptr<Classifier> c;
    {
        std::vector<CompiledRule> rules = {make_rule(base_key(), m, 1, 42)};
        c = Classifier::build(rules, 1);
        rules[0].index = 99;  // the snapshot holds a copy
    }
    const CompiledRule* r = c->lookup(base_key(), 0);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->index, 42u);
    EXPECT_EQ(r->n_actions, 1);
    EXPECT_EQ(r->actions[0].arg16, 42);
    EXPECT_TRUE(rule_matches(*r, base_key()));
}

TEST(Classifier, BulkLargerThan64IsSplit) {
    FlowKey m = zero_key();
    m.in_port = 0xffff;
    auto c = Classifier::build({make_rule(base_key(), m, 1, 0)}, 1);
    std::vector<FlowKey> keys(100, base_key());
    for (size_t i = 0; i < keys.size(); i += 3) keys[i].in_port = 2;
    std::vector<const CompiledRule*> out(keys.size());
    c->lookup_bulk(keys.data(), static_cast<unsigned>(keys.size()), 0, out.data());
    for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(out[i], c->lookup(keys[i], 0)) << i;
}

// ---- Randomised comparison with a linear scan ----------------------------------------------

/// Draws field values from small realistic sets, so that random rules and keys meet often.
class KeyGen {
public:
    explicit KeyGen(uint32_t seed) : rng_(seed) {}

    FlowKey key() {
        FlowKey k = zero_key();
        k.in_port = static_cast<uint16_t>(pick(4));
        const uint16_t vlans[] = {kNoVlan, 10, 20, 100};
        k.vlan = vlans[pick(4)];
        const uint8_t macs[4][6] = {{0x52, 0x54, 0, 0, 0, 1},
                                    {0x52, 0x54, 0, 0, 0, 2},
                                    {0x02, 0, 0, 0xaa, 0xbb, 0xcc},
                                    {0x01, 0, 0x5e, 0, 0, 0xfb}};
        std::memcpy(k.eth_dst, macs[pick(4)], 6);
        std::memcpy(k.eth_src, macs[pick(3)], 6);
        if (pick(8) == 0) k.eth_src[5] = static_cast<uint8_t>(rng_());
        const unsigned l3 = pick(8);
        if (l3 < 5) {
            k.ethertype = 0x0800;
            k.ip_version = 4;
            for (uint8_t* a : {k.ip_src, k.ip_dst}) {
                a[0] = 10;
                a[1] = static_cast<uint8_t>(pick(3));
                a[2] = static_cast<uint8_t>(pick(4));
                a[3] = static_cast<uint8_t>(pick(4) == 0 ? rng_() : pick(4));
            }
        } else if (l3 < 7) {
            k.ethertype = 0x86dd;
            k.ip_version = 6;
            for (uint8_t* a : {k.ip_src, k.ip_dst}) {
                const uint8_t p[6] = {0x20, 0x01, 0x0d, 0xb8, 0, 0};
                std::memcpy(a, p, 6);
                a[5] = static_cast<uint8_t>(pick(3));
                a[8] = static_cast<uint8_t>(pick(2) << 7);
                a[15] = static_cast<uint8_t>(pick(4) == 0 ? rng_() : pick(4));
            }
        } else {
            k.ethertype = 0x0806;
        }
        if (k.ip_version != 0) {
            const uint8_t protos[] = {6, 17, 1};
            k.ip_proto = protos[pick(3)];
            const uint16_t ports[] = {22, 53, 80, 443, 8080, 1024, 1500};
            k.l4_src = pick(3) == 0 ? ports[pick(7)] : static_cast<uint16_t>(1024 + pick(4096));
            k.l4_dst = ports[pick(7)];
            if (k.ip_proto == 6) k.tcp_flags = static_cast<uint8_t>(rng_());
        }
        const uint8_t states[] = {0, kCtTracked | kCtNew, kCtTracked | kCtEstablished,
                                  kCtTracked | kCtEstablished | kCtReply, kCtTracked | kCtInvalid};
        k.ct_state = states[pick(5)];
        k.ct_zone = static_cast<uint16_t>(pick(3));
        const uint32_t marks[] = {0, 1, 0x100, 0x101};
        k.ct_mark = marks[pick(4)];
        return k;
    }

    /// A mask over 1..5 fields as a rule would match them, prefix lengths drawn at random.
    FlowKey mask() {
        FlowKey m = zero_key();
        const unsigned n_fields = 1 + pick(5);
        for (unsigned f = 0; f < n_fields; ++f) {
            switch (pick(15)) {
                case 0:
                    m.in_port = 0xffff;
                    break;
                case 1:
                    m.vlan = 0xffff;
                    break;
                case 2:
                    m.ethertype = 0xffff;
                    break;
                case 3:
                    m.ip_proto = 0xff;
                    break;
                case 4:
                    m.tcp_flags = static_cast<uint8_t>(1 + pick(255));
                    break;
                case 5:  // exact, vendor prefix, or only the group bit
                    if (pick(3) == 0)
                        m.eth_dst[0] |= 1;
                    else
                        set_prefix(m.eth_dst, 6, pick(2) == 0 ? 48 : 24);
                    break;
                case 6:
                    set_prefix(m.eth_src, 6, pick(2) == 0 ? 48 : 24);
                    break;
                case 7:
                    m.l4_src = static_cast<uint16_t>(0xffff << pick(12));
                    break;
                case 8:
                    m.l4_dst = static_cast<uint16_t>(0xffff << pick(4));
                    break;
                case 9:
                    set_prefix(m.ip_src, 4, pick(33));
                    m.ethertype = 0xffff;
                    break;
                case 10:
                    set_prefix(m.ip_dst, 4, pick(33));
                    break;
                case 11:
                    set_prefix(m.ip_src, 16, pick(129));
                    m.ip_version = 0xff;
                    break;
                case 12:
                    set_prefix(m.ip_dst, 16, pick(129));
                    break;
                case 13:
                    m.ct_state = static_cast<uint8_t>(1 + pick(63));
                    break;
                default:
                    if (pick(2) == 0)
                        m.ct_zone = 0xffff;
                    else
                        m.ct_mark = static_cast<uint32_t>(rng_()) | 1;
                    break;
            }
        }
        return m;
    }

    unsigned pick(unsigned n) { return static_cast<unsigned>(rng_() % n); }
    std::mt19937& rng() { return rng_; }

private:
    std::mt19937 rng_;
};

/// The reference: highest priority, then lowest index, over every rule of the table.
const CompiledRule* linear_scan(const std::vector<CompiledRule>& rules, const FlowKey& k,
                                uint8_t table) {
    const CompiledRule* best = nullptr;
    for (const CompiledRule& r : rules) {
        if (r.table != table || !rule_matches(r, k)) continue;
        if (best == nullptr || r.priority > best->priority ||
            (r.priority == best->priority && r.index < best->index))
            best = &r;
    }
    return best;
}

TEST(Classifier, RandomisedAgainstLinearScan) {
    const uint8_t tables[] = {0, 1, 5};
    size_t total_keys = 0, total_hits = 0;
    for (uint32_t seed = 1; seed <= 20; ++seed) {
        SCOPED_TRACE("seed " + std::to_string(seed));
        KeyGen gen(seed);
        std::vector<FlowKey> masks(1 + gen.pick(20));
        for (FlowKey& m : masks) m = gen.mask();
        const unsigned n_rules = 1 + gen.pick(300);
        // Narrow priority ranges make many ties (decided by index); wide ones few.
        const int32_t prio_range = gen.pick(2) == 0 ? 4 : 2000;
        std::vector<uint32_t> indices(n_rules);
        std::iota(indices.begin(), indices.end(), 0u);
        std::shuffle(indices.begin(), indices.end(), gen.rng());
        std::vector<CompiledRule> rules;
        for (unsigned i = 0; i < n_rules; ++i) {
            const int32_t prio = static_cast<int32_t>(gen.pick(prio_range)) - prio_range / 2;
            rules.push_back(make_rule(gen.key(),
                                      masks[gen.pick(static_cast<unsigned>(masks.size()))], prio,
                                      indices[i] * 3, tables[gen.pick(3)]));
        }
        auto c = Classifier::build(rules, seed);
        ASSERT_NE(c, nullptr);
        ASSERT_EQ(c->rule_count(), rules.size());
        for (uint8_t t : tables) {
            std::set<std::string> distinct;
            for (const CompiledRule& r : rules)
                if (r.table == t)
                    distinct.emplace(reinterpret_cast<const char*>(&r.mask), sizeof(FlowKey));
            EXPECT_EQ(c->subtable_count(t), distinct.size());
            EXPECT_EQ(c->table_empty(t), distinct.empty());
        }

        std::vector<FlowKey> keys(2000);
        std::vector<uint8_t> key_table(keys.size());
        for (size_t i = 0; i < keys.size(); ++i) {
            FlowKey k = gen.key();
            if (i % 2 == 0) {  // make it match a chosen rule: its value plus random bits elsewhere
                const CompiledRule& r = rules[gen.pick(n_rules)];
                auto* kw = reinterpret_cast<uint8_t*>(&k);
                const auto* v = reinterpret_cast<const uint8_t*>(&r.value);
                const auto* m = reinterpret_cast<const uint8_t*>(&r.mask);
                for (size_t b = 0; b < sizeof(FlowKey); ++b) kw[b] = (kw[b] & ~m[b]) | v[b];
                key_table[i] = r.table;
            } else {
                key_table[i] = tables[gen.pick(3)];
            }
            keys[i] = k;
        }

        std::vector<const CompiledRule*> single(keys.size());
        for (size_t i = 0; i < keys.size(); ++i) {
            const CompiledRule* want = linear_scan(rules, keys[i], key_table[i]);
            single[i] = c->lookup(keys[i], key_table[i]);
            ++total_keys;
            if (want == nullptr) {
                EXPECT_EQ(single[i], nullptr) << "key " << i;
                continue;
            }
            ++total_hits;
            ASSERT_NE(single[i], nullptr) << "key " << i;
            EXPECT_EQ(single[i]->index, want->index) << "key " << i;
            EXPECT_EQ(single[i]->priority, want->priority) << "key " << i;
            EXPECT_EQ(single[i]->table, key_table[i]) << "key " << i;
            EXPECT_TRUE(rule_matches(*single[i], keys[i])) << "key " << i;
        }

        // lookup_bulk must give the very same pointers, for batches of every size and table.
        for (uint8_t t : tables) {
            std::vector<const CompiledRule*> per_key(keys.size());
            for (size_t i = 0; i < keys.size(); ++i) per_key[i] = c->lookup(keys[i], t);
            size_t i = 0;
            while (i < keys.size()) {
                const unsigned n =
                    std::min<unsigned>(1 + gen.pick(64), static_cast<unsigned>(keys.size() - i));
                const CompiledRule* out[64];
                c->lookup_bulk(&keys[i], n, t, out);
                for (unsigned j = 0; j < n; ++j)
                    ASSERT_EQ(out[j], per_key[i + j]) << "key " << i + j;
                i += n;
            }
        }
    }
    // Guard against a generator that never matches anything: the comparison would be vacuous.
    EXPECT_GT(total_hits, total_keys / 2);
}

}  // namespace
}  // namespace ferry

namespace ferry {
namespace {

// Revalidation of flow-cache answers across snapshots: rules on in_port (index 1) and on the
// TCP destination port (index 2); each change builds the next snapshot from the previous one
// and the delta, as RuleTable does.
struct Snapshots {
    std::vector<CompiledRule> rules;
    std::vector<std::unique_ptr<Classifier>> built;

    Snapshots() {
        FlowKey in_port = zero_key();
        in_port.in_port = 0xffff;
        rules.push_back(make_rule(base_key(), in_port, 10, 1));
        built.push_back(Classifier::build(rules, 1, nullptr, nullptr));
    }
    const Classifier& last() const { return *built.back(); }
    void change(const RuleDelta& d) {
        for (uint32_t r : d.removed)
            rules.erase(std::remove_if(rules.begin(), rules.end(),
                                       [r](const CompiledRule& x) { return x.index == r; }),
                        rules.end());
        rules.insert(rules.end(), d.added.begin(), d.added.end());
        built.push_back(Classifier::build(rules, last().generation() + 1, &last(), &d));
    }
};

CompiledRule rule_on_dport(uint16_t dport, uint32_t index, int32_t priority) {
    FlowKey k = base_key();
    k.l4_dst = dport;
    FlowKey m = zero_key();
    m.l4_dst = 0xffff;
    m.ip_proto = 0xff;
    return make_rule(k, m, priority, index);
}

TEST(ClassifierRevalidate, UnrelatedAddKeepsTheAnswerAndGivesTheNewSnapshotsRule) {
    Snapshots s;
    const FlowKey key = base_key();  // dport 80
    ASSERT_EQ(hit(s.last(), key), 1);
    s.change(RuleDelta{.added = {rule_on_dport(443, 2, 20)}, .removed = {}, .full = false});
    const CompiledRule* r = nullptr;
    ASSERT_TRUE(s.last().revalidate(key, 0, 1, 1, &r));
    EXPECT_EQ(r, s.last().lookup(key, 0));  // the rule's entry in the new snapshot
    EXPECT_NE(r, s.built[0]->lookup(key, 0));
}

TEST(ClassifierRevalidate, AddedMatchingRuleInvalidates) {
    Snapshots s;
    s.change(RuleDelta{.added = {rule_on_dport(80, 2, 20)}, .removed = {}, .full = false});
    const CompiledRule* r = nullptr;
    EXPECT_FALSE(s.last().revalidate(base_key(), 0, 1, 1, &r));
    EXPECT_EQ(hit(s.last(), base_key()), 2);  // what a fresh lookup gives instead
    // A matching rule of another table does not concern table 0.
    CompiledRule other = rule_on_dport(80, 3, 20);
    other.table = 1;
    Snapshots t;
    t.change(RuleDelta{.added = {other}, .removed = {}, .full = false});
    EXPECT_TRUE(t.last().revalidate(base_key(), 0, 1, 1, &r));
}

TEST(ClassifierRevalidate, RemovedRuleInvalidatesOthersStay) {
    Snapshots s;
    s.change(RuleDelta{.added = {rule_on_dport(443, 2, 20)}, .removed = {}, .full = false});
    s.change(RuleDelta{.added = {}, .removed = {1}, .full = false});
    const CompiledRule* r = nullptr;
    EXPECT_FALSE(s.last().revalidate(base_key(), 0, 2, 1, &r));  // its rule is gone
    FlowKey https = base_key();
    https.l4_dst = 443;
    EXPECT_TRUE(s.last().revalidate(https, 0, 2, 2, &r));  // cached at generation 2
    EXPECT_EQ(r->index, 2u);
    // A "no rule matched" answer stays right while nothing added matches.
    FlowKey none = base_key();
    none.in_port = 9;
    none.l4_dst = 22;
    EXPECT_TRUE(s.last().revalidate(none, 0, 1, Classifier::kNoRuleIndex, &r));
    EXPECT_EQ(r, nullptr);
}

TEST(ClassifierRevalidate, UnknownOrFullHistoryIsNotRevalidated) {
    Snapshots s;
    s.change(RuleDelta{.added = {}, .removed = {}, .full = true});
    const CompiledRule* r = nullptr;
    EXPECT_FALSE(s.last().revalidate(base_key(), 0, 1, 1, &r));
    // Built without previous/delta: it knows no history.
    auto lone = Classifier::build(s.rules, 9, nullptr, nullptr);
    EXPECT_FALSE(lone->revalidate(base_key(), 0, 8, 1, &r));
    // A generation gap breaks the chain.
    RuleDelta d;
    auto gap = Classifier::build(s.rules, s.last().generation() + 2, &s.last(), &d);
    EXPECT_FALSE(gap->revalidate(base_key(), 0, s.last().generation(), 1, &r));
}

TEST(ClassifierRevalidate, HistoryIsBoundedAndOlderEntriesMiss) {
    Snapshots s;
    for (size_t i = 0; i < Classifier::kHistoryChanges + 5; ++i)
        s.change(RuleDelta{.added = {}, .removed = {}, .full = false});
    const CompiledRule* r = nullptr;
    const uint64_t now = s.last().generation();
    EXPECT_FALSE(s.last().revalidate(base_key(), 0, 1, 1, &r));  // older than the history
    EXPECT_TRUE(s.last().revalidate(base_key(), 0, now - Classifier::kHistoryChanges, 1, &r));
    EXPECT_TRUE(s.last().revalidate(base_key(), 0, now - 1, 1, &r));
}

}  // namespace
}  // namespace ferry
