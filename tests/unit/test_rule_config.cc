// Unit tests of the flow-rule compiler: each test feeds a JSON rule to parse_rule and checks
// either the compiled entries, by running rule_matches on hand-built FlowKeys that must and must
// not match, and the encoded actions; or a refusal whose message names the offending field by
// its exact path. port_range_to_masks is checked exhaustively over all 65536 ports.
#include <arpa/inet.h>

#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "control/rule_config.h"

namespace ferry {
namespace {

using nlohmann::json;

constexpr const char* kPath = "rules[0]";

// Ports vm1..vm3 and uplink (slot 7); meters 1 and 7.
RuleContext test_context() {
    static const std::map<std::string, uint16_t> ports{
        {"vm1", 1}, {"vm2", 2}, {"vm3", 3}, {"uplink", 7}};
    RuleContext ctx;
    ctx.port_slot = [](const std::string& name) -> std::optional<uint16_t> {
        auto it = ports.find(name);
        if (it == ports.end()) return std::nullopt;
        return it->second;
    };
    ctx.meter_exists = [](uint32_t id) { return id == 1 || id == 7; };
    return ctx;
}

// Every entry keeps the classifier's invariant value == value & mask, and index 0.
void expect_well_formed(const RuleSpec& spec) {
    for (const CompiledRule& e : spec.entries) {
        const auto* v = reinterpret_cast<const uint8_t*>(&e.value);
        const auto* m = reinterpret_cast<const uint8_t*>(&e.mask);
        for (size_t i = 0; i < sizeof(FlowKey); ++i) {
            EXPECT_EQ(v[i] & m[i], v[i]) << "value byte " << i << " outside the mask";
        }
        EXPECT_EQ(e.index, 0u);
        EXPECT_EQ(e.pad, 0u);
        bool sets_mark = false;
        for (unsigned a = 0; a < e.n_actions; ++a)
            sets_mark |= e.actions[a].type == ActionType::kCt && (e.actions[a].arg32 & kCtSetMark);
        if (!sets_mark) {
            EXPECT_EQ(e.ct_mark, 0u);
        }
        EXPECT_EQ(e.table, spec.table);
        EXPECT_EQ(e.priority, spec.priority);
    }
}

// Compiles a rule that must be accepted.
RuleSpec compile(const json& rule) {
    Result<RuleSpec> r = parse_rule(rule, test_context(), kPath);
    EXPECT_TRUE(r.ok()) << r.error().message << " for " << rule.dump();
    if (!r.ok()) return RuleSpec{};
    expect_well_formed(*r);
    return std::move(*r);
}

// The error parse_rule gives for rule (expecting code), or "OK" when it accepts it.
std::string error_of(const json& rule, ErrorCode code = ErrorCode::kInvalidParams) {
    Result<RuleSpec> r = parse_rule(rule, test_context(), kPath);
    if (r.ok()) return "OK";
    EXPECT_EQ(r.error().code, code) << r.error().message;
    return r.error().message;
}

json with_match(const json& match) {
    return {{"id", 1}, {"match", match}, {"actions", {"drop"}}};
}

json with_actions(const json& actions, int table = 0) {
    return {{"id", 1}, {"table", table}, {"actions", actions}};
}

RuleSpec compile_match(const json& match) {
    return compile(with_match(match));
}

std::string match_error(const json& match, ErrorCode code = ErrorCode::kInvalidParams) {
    return error_of(with_match(match), code);
}

bool matches(const RuleSpec& spec, const FlowKey& key) {
    for (const CompiledRule& e : spec.entries) {
        if (rule_matches(e, key)) return true;
    }
    return false;
}

void set_ipv4(uint8_t* field, const char* text) {
    ASSERT_EQ(inet_pton(AF_INET, text, field), 1) << text;
}

void set_ipv6(uint8_t* field, const char* text) {
    ASSERT_EQ(inet_pton(AF_INET6, text, field), 1) << text;
}

// An untagged IPv4 TCP SYN 10.1.2.3:1234 -> 192.168.0.1:80 from vm1, as the parser builds it.
FlowKey tcp_key() {
    FlowKey k{};
    k.in_port = 1;
    k.vlan = kNoVlan;
    k.ethertype = 0x0800;
    k.ip_proto = 6;
    k.tcp_flags = 0x02;
    const uint8_t dst[6] = {0x02, 0, 0, 0, 0, 0x02};
    const uint8_t src[6] = {0x02, 0, 0, 0, 0, 0x01};
    std::memcpy(k.eth_dst, dst, 6);
    std::memcpy(k.eth_src, src, 6);
    k.l4_src = 1234;
    k.l4_dst = 80;
    k.ip_version = 4;
    set_ipv4(k.ip_src, "10.1.2.3");
    set_ipv4(k.ip_dst, "192.168.0.1");
    return k;
}

// An IPv6 UDP packet 2001:db8::1:53 -> 2001:db9::2:5353.
FlowKey udp6_key() {
    FlowKey k = tcp_key();
    std::memset(k.ip_src, 0, 16);
    std::memset(k.ip_dst, 0, 16);
    k.ethertype = 0x86dd;
    k.ip_version = 6;
    k.ip_proto = 17;
    k.tcp_flags = 0;
    k.l4_src = 53;
    k.l4_dst = 5353;
    set_ipv6(k.ip_src, "2001:db8::1");
    set_ipv6(k.ip_dst, "2001:db9::2");
    return k;
}

// A key changed by f.
FlowKey tcp_key_with(const std::function<void(FlowKey&)>& f) {
    FlowKey k = tcp_key();
    f(k);
    return k;
}

// ---------------------------------------------------------------------------------------------
// The rule object.

TEST(RuleConfig, DefaultsMatchEverything) {
    RuleSpec spec = compile({{"id", 5}, {"actions", {"normal"}}});
    EXPECT_EQ(spec.id, 5u);
    EXPECT_EQ(spec.table, 0);
    EXPECT_EQ(spec.priority, 0);
    ASSERT_EQ(spec.entries.size(), 1u);
    const CompiledRule& e = spec.entries[0];
    const FlowKey zero{};
    EXPECT_EQ(std::memcmp(&e.mask, &zero, sizeof(FlowKey)), 0);
    EXPECT_EQ(std::memcmp(&e.value, &zero, sizeof(FlowKey)), 0);
    EXPECT_EQ(e.n_actions, 1);
    EXPECT_EQ(e.actions[0].type, ActionType::kNormal);
    EXPECT_TRUE(matches(spec, tcp_key()));
    EXPECT_TRUE(matches(spec, udp6_key()));
    EXPECT_EQ(spec.source, json::parse(R"({"id": 5, "table": 0, "priority": 0, "match": {},
                                           "actions": ["normal"]})"));
    // An empty match is the same as none.
    EXPECT_EQ(compile({{"id", 5}, {"match", json::object()}, {"actions", {"normal"}}}).source,
              spec.source);
}

TEST(RuleConfig, SourceEchoesTheRuleAsGiven) {
    const json rule = json::parse(R"({"id": 9, "table": 2, "priority": -7,
        "match": {"eth_type": "ipv4", "ip_proto": "tcp", "l4_dst": "1000-2000"},
        "actions": ["meter:1", "goto_table:3"]})");
    RuleSpec spec = compile(rule);
    EXPECT_EQ(spec.source, rule);
    EXPECT_EQ(spec.table, 2);
    EXPECT_EQ(spec.priority, -7);
    EXPECT_EQ(spec.entries.size(), 8u);
}

TEST(RuleConfig, IdTablePriorityRanges) {
    EXPECT_EQ(compile({{"id", UINT64_MAX}, {"actions", {"drop"}}}).id, UINT64_MAX);
    EXPECT_EQ(compile({{"id", 0}, {"actions", {"drop"}}}).id, 0u);
    EXPECT_EQ(error_of({{"actions", {"drop"}}}), "rules[0].id: required");
    for (const json& bad : {json(-1), json(1.5), json("1"), json(nullptr)}) {
        EXPECT_EQ(error_of({{"id", bad}, {"actions", {"drop"}}}),
                  "rules[0].id: must be an unsigned 64-bit integer")
            << bad.dump();
    }
    EXPECT_EQ(compile({{"id", 1}, {"table", 63}, {"actions", {"drop"}}}).table, 63);
    EXPECT_EQ(compile({{"id", 1}, {"table", 63}, {"actions", {"drop"}}}).entries[0].table, 63);
    EXPECT_EQ(error_of({{"id", 1}, {"table", 64}, {"actions", {"drop"}}}),
              "rules[0].table: must be an integer in 0..63");
    EXPECT_EQ(error_of({{"id", 1}, {"table", -1}, {"actions", {"drop"}}}),
              "rules[0].table: must be an integer in 0..63");
    EXPECT_EQ(compile({{"id", 1}, {"priority", INT32_MIN}, {"actions", {"drop"}}}).priority,
              INT32_MIN);
    EXPECT_EQ(compile({{"id", 1}, {"priority", INT32_MAX}, {"actions", {"drop"}}}).priority,
              INT32_MAX);
    for (const json& bad : {json(int64_t{INT32_MAX} + 1), json(int64_t{INT32_MIN} - 1),
                            json(UINT64_MAX), json("high"), json(2.0)}) {
        EXPECT_EQ(error_of({{"id", 1}, {"priority", bad}, {"actions", {"drop"}}}),
                  "rules[0].priority: must be an integer in -2147483648..2147483647")
            << bad.dump();
    }
}

TEST(RuleConfig, ObjectShape) {
    EXPECT_EQ(error_of(json::array()), "rules[0]: must be an object");
    EXPECT_EQ(error_of({{"id", 1}, {"actions", {"drop"}}, {"cookie", 3}}),
              "rules[0].cookie: unknown key");
    EXPECT_EQ(match_error({{"colour", "red"}}), "rules[0].match.colour: unknown key");
    EXPECT_EQ(error_of({{"id", 1}, {"match", json::array()}, {"actions", {"drop"}}}),
              "rules[0].match: must be an object");
    EXPECT_EQ(error_of({{"id", 1}}), "rules[0].actions: required");
    // The path prefix is the caller's.
    Result<RuleSpec> r = parse_rule({{"id", 1}}, test_context(), "params");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "params.actions: required");
}

// ---------------------------------------------------------------------------------------------
// Match fields.

TEST(RuleConfig, InPort) {
    RuleSpec spec = compile_match({{"in_port", "vm1"}});
    EXPECT_EQ(spec.entries[0].value.in_port, 1);
    EXPECT_EQ(spec.entries[0].mask.in_port, 0xffff);
    EXPECT_TRUE(matches(spec, tcp_key()));
    EXPECT_FALSE(matches(spec, tcp_key_with([](FlowKey& k) { k.in_port = 2; })));
    EXPECT_TRUE(matches(compile_match({{"in_port", "uplink"}}),
                        tcp_key_with([](FlowKey& k) { k.in_port = 7; })));
    EXPECT_EQ(match_error({{"in_port", "vm9"}}, ErrorCode::kNotFound),
              "rules[0].match.in_port: no port named vm9");
    EXPECT_EQ(match_error({{"in_port", 1}}), "rules[0].match.in_port: must be a port name");
}

TEST(RuleConfig, EthernetAddresses) {
    RuleSpec src = compile_match({{"eth_src", "02:00:00:00:00:01"}});
    EXPECT_TRUE(matches(src, tcp_key()));
    EXPECT_FALSE(matches(src, tcp_key_with([](FlowKey& k) { k.eth_src[5] = 3; })));
    EXPECT_FALSE(matches(src, tcp_key_with([](FlowKey& k) { k.eth_src[0] = 0; })));

    RuleSpec dst = compile_match({{"eth_dst", "02:00:00:00:00:00/FF:FF:FF:00:00:00"}});
    const uint8_t mask[6] = {0xff, 0xff, 0xff, 0, 0, 0};
    EXPECT_EQ(std::memcmp(dst.entries[0].mask.eth_dst, mask, 6), 0);
    EXPECT_TRUE(matches(dst, tcp_key()));
    EXPECT_TRUE(matches(dst, tcp_key_with([](FlowKey& k) { k.eth_dst[4] = 0xaa; })));
    EXPECT_FALSE(matches(dst, tcp_key_with([](FlowKey& k) { k.eth_dst[2] = 1; })));

    // Multicast bit only.
    RuleSpec mcast = compile_match({{"eth_dst", "01:00:00:00:00:00/01:00:00:00:00:00"}});
    EXPECT_FALSE(matches(mcast, tcp_key()));
    EXPECT_TRUE(matches(mcast, tcp_key_with([](FlowKey& k) { k.eth_dst[0] = 0x33; })));

    const std::string what =
        "must be a MAC address \"02:00:00:00:00:01\" or a masked one "
        "\"02:00:00:00:00:00/ff:ff:ff:00:00:00\"";
    for (const json& bad :
         {json("02:00:00:00:00"), json("02-00-00-00-00-01"), json("02:00:00:00:00:0g"),
          json("2:0:0:0:0:1"), json("0200:0000:0001"), json(12), json("02:00:00:00:00:01/ff:ff")}) {
        EXPECT_EQ(match_error({{"eth_src", bad}}), "rules[0].match.eth_src: " + what) << bad.dump();
    }
    EXPECT_EQ(match_error({{"eth_dst", "02:00:00:00:00:01/ff:ff:ff:00:00:00"}}),
              "rules[0].match.eth_dst: 02:00:00:00:00:01/ff:ff:ff:00:00:00 has bits outside "
              "its mask");
}

TEST(RuleConfig, Vlan) {
    RuleSpec ten = compile_match({{"vlan", 10}});
    EXPECT_EQ(ten.entries[0].mask.vlan, 0xffff);
    EXPECT_TRUE(matches(ten, tcp_key_with([](FlowKey& k) { k.vlan = 10; })));
    EXPECT_FALSE(matches(ten, tcp_key_with([](FlowKey& k) { k.vlan = 11; })));
    EXPECT_FALSE(matches(ten, tcp_key()));  // untagged

    RuleSpec none = compile_match({{"vlan", "none"}});
    EXPECT_EQ(none.entries[0].value.vlan, kNoVlan);
    EXPECT_TRUE(matches(none, tcp_key()));
    EXPECT_FALSE(matches(none, tcp_key_with([](FlowKey& k) { k.vlan = 0; })));
    EXPECT_TRUE(
        matches(compile_match({{"vlan", 0}}), tcp_key_with([](FlowKey& k) { k.vlan = 0; })));
    EXPECT_TRUE(
        matches(compile_match({{"vlan", 4095}}), tcp_key_with([](FlowKey& k) { k.vlan = 4095; })));
    for (const json& bad : {json(4096), json(-1), json("10"), json("untagged")}) {
        EXPECT_EQ(match_error({{"vlan", bad}}),
                  "rules[0].match.vlan: must be a VLAN id 0..4095 or \"none\"")
            << bad.dump();
    }
}

TEST(RuleConfig, EthType) {
    for (const json& ipv4 : {json(2048), json("0x0800"), json("ipv4"), json("2048")}) {
        RuleSpec spec = compile_match({{"eth_type", ipv4}});
        EXPECT_EQ(spec.entries[0].value.ethertype, 0x0800) << ipv4.dump();
        EXPECT_EQ(spec.entries[0].mask.ethertype, 0xffff);
        EXPECT_TRUE(matches(spec, tcp_key()));
        EXPECT_FALSE(matches(spec, udp6_key()));
    }
    EXPECT_TRUE(matches(compile_match({{"eth_type", "ipv6"}}), udp6_key()));
    EXPECT_EQ(compile_match({{"eth_type", "arp"}}).entries[0].value.ethertype, 0x0806);
    EXPECT_EQ(compile_match({{"eth_type", "0x88CC"}}).entries[0].value.ethertype, 0x88cc);
    for (const json& bad : {json(65536), json("ip"), json("0x10000"), json("0x"), json(true)}) {
        EXPECT_EQ(match_error({{"eth_type", bad}}),
                  "rules[0].match.eth_type: must be an ethertype: 0..65535, \"0x0800\", "
                  "\"ipv4\", \"ipv6\" or \"arp\"")
            << bad.dump();
    }
}

TEST(RuleConfig, Ipv4Prefixes) {
    RuleSpec net = compile_match({{"ip_dst", "192.168.0.0/16"}});
    const CompiledRule& e = net.entries[0];
    EXPECT_EQ(e.value.ip_version, 4);
    EXPECT_EQ(e.mask.ip_version, 0xff);
    const uint8_t value[16] = {192, 168};
    const uint8_t mask[16] = {0xff, 0xff};
    EXPECT_EQ(std::memcmp(e.value.ip_dst, value, 16), 0);
    EXPECT_EQ(std::memcmp(e.mask.ip_dst, mask, 16), 0);
    EXPECT_TRUE(matches(net, tcp_key()));
    EXPECT_TRUE(
        matches(net, tcp_key_with([](FlowKey& k) { set_ipv4(k.ip_dst, "192.168.255.9"); })));
    EXPECT_FALSE(matches(net, tcp_key_with([](FlowKey& k) { set_ipv4(k.ip_dst, "192.169.0.1"); })));
    // The prefix of the other address does not count.
    EXPECT_FALSE(matches(net, tcp_key_with([](FlowKey& k) {
                             set_ipv4(k.ip_src, "192.168.0.1");
                             set_ipv4(k.ip_dst, "10.1.2.3");
                         })));

    RuleSpec host = compile_match({{"ip_src", "10.1.2.3"}});
    EXPECT_TRUE(matches(host, tcp_key()));
    EXPECT_FALSE(matches(host, tcp_key_with([](FlowKey& k) { set_ipv4(k.ip_src, "10.1.2.4"); })));
    EXPECT_EQ(host.entries[0].mask.ip_src[3], 0xff);
    EXPECT_EQ(host.entries[0].mask.ip_src[4], 0);

    // /20: a mask that ends inside a byte.
    RuleSpec odd = compile_match({{"ip_src", "10.1.16.0/20"}});
    EXPECT_EQ(odd.entries[0].mask.ip_src[2], 0xf0);
    EXPECT_TRUE(matches(odd, tcp_key_with([](FlowKey& k) { set_ipv4(k.ip_src, "10.1.31.255"); })));
    EXPECT_FALSE(matches(odd, tcp_key_with([](FlowKey& k) { set_ipv4(k.ip_src, "10.1.32.0"); })));

    // /0 still requires IPv4.
    RuleSpec any = compile_match({{"ip_src", "0.0.0.0/0"}});
    EXPECT_TRUE(matches(any, tcp_key()));
    EXPECT_FALSE(matches(any, udp6_key()));
    EXPECT_FALSE(matches(any, tcp_key_with([](FlowKey& k) { k.ip_version = 0; })));

    EXPECT_EQ(match_error({{"ip_dst", "10.0.0.0/33"}}),
              "rules[0].match.ip_dst: bad prefix length 33");
    EXPECT_EQ(match_error({{"ip_dst", "10.0.0.0/"}}),
              "rules[0].match.ip_dst: bad prefix length \"\"");
    EXPECT_EQ(match_error({{"ip_dst", "10.0.0.0/0x8"}}),
              "rules[0].match.ip_dst: bad prefix length \"0x8\"");
    EXPECT_EQ(match_error({{"ip_src", "10.1.2"}}),
              "rules[0].match.ip_src: bad IPv4 address \"10.1.2\"");
    EXPECT_EQ(match_error({{"ip_src", "10.1.2.256/8"}}),
              "rules[0].match.ip_src: bad IPv4 address \"10.1.2.256\"");
    EXPECT_EQ(match_error({{"ip_src", "2001:db8::1"}}),
              "rules[0].match.ip_src: bad IPv4 address \"2001:db8::1\"");
    EXPECT_EQ(match_error({{"ip_src", "10.1.2.3/8"}}),
              "rules[0].match.ip_src: 10.1.2.3/8 has bits outside its mask");
    EXPECT_EQ(match_error({{"ip_src", 167772160}}),
              "rules[0].match.ip_src: must be an IPv4 address or prefix like \"10.0.0.0/8\"");
}

TEST(RuleConfig, Ipv6Prefixes) {
    RuleSpec net = compile_match({{"ipv6_src", "2001:db8::/32"}});
    const CompiledRule& e = net.entries[0];
    EXPECT_EQ(e.value.ip_version, 6);
    const uint8_t value[16] = {0x20, 0x01, 0x0d, 0xb8};
    const uint8_t mask[16] = {0xff, 0xff, 0xff, 0xff};
    EXPECT_EQ(std::memcmp(e.value.ip_src, value, 16), 0);
    EXPECT_EQ(std::memcmp(e.mask.ip_src, mask, 16), 0);
    EXPECT_TRUE(matches(net, udp6_key()));
    EXPECT_FALSE(matches(net, tcp_key()));
    EXPECT_FALSE(matches(net, [] {
        FlowKey k = udp6_key();
        set_ipv6(k.ip_src, "2001:db9::1");
        return k;
    }()));

    RuleSpec host = compile_match({{"ipv6_dst", "2001:db9::2"}});
    EXPECT_TRUE(matches(host, udp6_key()));
    EXPECT_EQ(host.entries[0].mask.ip_dst[15], 0xff);
    EXPECT_FALSE(matches(host, [] {
        FlowKey k = udp6_key();
        k.ip_dst[15] = 3;
        return k;
    }()));
    EXPECT_TRUE(matches(compile_match({{"ipv6_dst", "::/0"}}), udp6_key()));
    EXPECT_FALSE(matches(compile_match({{"ipv6_dst", "::/0"}}), tcp_key()));

    EXPECT_EQ(match_error({{"ipv6_dst", "2001:db8::/129"}}),
              "rules[0].match.ipv6_dst: bad prefix length 129");
    EXPECT_EQ(match_error({{"ipv6_dst", "2001:db8:::1"}}),
              "rules[0].match.ipv6_dst: bad IPv6 address \"2001:db8:::1\"");
    EXPECT_EQ(match_error({{"ipv6_dst", "2001:db8::1/64"}}),
              "rules[0].match.ipv6_dst: 2001:db8::1/64 has bits outside its mask");
    EXPECT_EQ(match_error({{"ipv6_src", 1}}),
              "rules[0].match.ipv6_src: must be an IPv6 address or prefix like \"2001:db8::/32\"");
}

TEST(RuleConfig, IpProto) {
    const std::map<std::string, uint8_t> names{
        {"tcp", 6}, {"udp", 17}, {"icmp", 1}, {"icmpv6", 58}, {"sctp", 132}};
    for (const auto& [name, number] : names) {
        RuleSpec spec = compile_match({{"eth_type", "ipv4"}, {"ip_proto", name}});
        EXPECT_EQ(spec.entries[0].value.ip_proto, number) << name;
        EXPECT_EQ(spec.entries[0].mask.ip_proto, 0xff);
        EXPECT_EQ(
            compile_match({{"eth_type", "ipv4"}, {"ip_proto", number}}).entries[0].value.ip_proto,
            number);
    }
    RuleSpec tcp = compile_match({{"eth_type", "ipv4"}, {"ip_proto", "tcp"}});
    EXPECT_TRUE(matches(tcp, tcp_key()));
    EXPECT_FALSE(matches(tcp, tcp_key_with([](FlowKey& k) { k.ip_proto = 17; })));
    EXPECT_TRUE(matches(compile_match({{"eth_type", "ipv6"}, {"ip_proto", "udp"}}), udp6_key()));
    EXPECT_TRUE(
        matches(compile_match({{"ipv6_src", "2001:db8::/32"}, {"ip_proto", 17}}), udp6_key()));
    for (const json& bad : {json(256), json("TCP"), json("gre"), json(-6)}) {
        EXPECT_EQ(match_error({{"eth_type", "ipv4"}, {"ip_proto", bad}}),
                  "rules[0].match.ip_proto: must be 0..255 or one of \"tcp\", \"udp\", \"icmp\", "
                  "\"icmpv6\", \"sctp\"")
            << bad.dump();
    }
}

TEST(RuleConfig, L4PortsExactMaskedAndRanges) {
    const json tcp = {{"eth_type", "ipv4"}, {"ip_proto", "tcp"}};
    auto with = [&](const char* key, const json& v) {
        json m = tcp;
        m[key] = v;
        return m;
    };
    RuleSpec dst = compile_match(with("l4_dst", 80));
    ASSERT_EQ(dst.entries.size(), 1u);
    EXPECT_EQ(dst.entries[0].value.l4_dst, 80);
    EXPECT_EQ(dst.entries[0].mask.l4_dst, 0xffff);
    EXPECT_EQ(dst.entries[0].mask.l4_src, 0);
    EXPECT_TRUE(matches(dst, tcp_key()));
    EXPECT_FALSE(matches(dst, tcp_key_with([](FlowKey& k) { k.l4_dst = 81; })));
    EXPECT_TRUE(matches(compile_match(with("l4_src", "1234")), tcp_key()));

    RuleSpec masked = compile_match(with("l4_dst", "0x0050/0xfff0"));
    EXPECT_EQ(masked.entries[0].mask.l4_dst, 0xfff0);
    for (uint16_t p = 0x40; p < 0x70; ++p) {
        EXPECT_EQ(matches(masked, tcp_key_with([p](FlowKey& k) { k.l4_dst = p; })),
                  p >= 0x50 && p <= 0x5f)
            << p;
    }

    RuleSpec range = compile_match(with("l4_src", "1000-2000"));
    EXPECT_EQ(range.entries.size(), 8u);
    for (uint32_t p = 0; p <= 0xffff; ++p) {
        const FlowKey k =
            tcp_key_with([p](FlowKey& key) { key.l4_src = static_cast<uint16_t>(p); });
        ASSERT_EQ(matches(range, k), p >= 1000 && p <= 2000) << p;
    }
    // Every entry keeps the other fields and the actions.
    for (const CompiledRule& e : range.entries) {
        EXPECT_EQ(e.value.ip_proto, 6);
        EXPECT_EQ(e.mask.l4_dst, 0);
        EXPECT_EQ(e.n_actions, 1);
        EXPECT_EQ(e.actions[0].type, ActionType::kDrop);
    }
    EXPECT_EQ(compile_match(with("l4_dst", "0-65535")).entries.size(), 1u);
    EXPECT_EQ(compile_match(with("l4_dst", "7-7")).entries[0].mask.l4_dst, 0xffff);
    EXPECT_EQ(compile_match(with("l4_dst", "0x10-0x1f")).entries.size(), 1u);

    const std::string what =
        "must be a port 0..65535, a range \"1000-2000\" or a masked value \"0x0050/0xfff0\"";
    for (const json& bad : {json(65536), json(-1), json("http"), json("1000-"), json("-5"),
                            json("1-70000"), json("0x50/0x10000"), json(80.5)}) {
        EXPECT_EQ(match_error(with("l4_dst", bad)), "rules[0].match.l4_dst: " + what) << bad.dump();
    }
    EXPECT_EQ(match_error(with("l4_dst", "2000-1000")),
              "rules[0].match.l4_dst: range 2000-1000 is empty (start above end)");
    EXPECT_EQ(match_error(with("l4_src", "0x0051/0xfff0")),
              "rules[0].match.l4_src: 0x0051/0xfff0 has bits outside its mask");
    // UDP and SCTP ports are fine too.
    EXPECT_TRUE(matches(
        compile_match({{"eth_type", "ipv6"}, {"ip_proto", "udp"}, {"l4_dst", 5353}}), udp6_key()));
    EXPECT_EQ(
        compile_match({{"eth_type", "ipv4"}, {"ip_proto", "sctp"}, {"l4_dst", 9}}).entries.size(),
        1u);
}

TEST(RuleConfig, IcmpTypeAndCode) {
    RuleSpec echo = compile_match(
        {{"eth_type", "ipv4"}, {"ip_proto", "icmp"}, {"icmp_type", 8}, {"icmp_code", 0}});
    const CompiledRule& e = echo.entries[0];
    EXPECT_EQ(e.value.l4_src, 8);
    EXPECT_EQ(e.mask.l4_src, 0xffff);
    EXPECT_EQ(e.value.l4_dst, 0);
    EXPECT_EQ(e.mask.l4_dst, 0xffff);
    FlowKey ping = tcp_key_with([](FlowKey& k) {
        k.ip_proto = 1;
        k.tcp_flags = 0;
        k.l4_src = 8;
        k.l4_dst = 0;
    });
    EXPECT_TRUE(matches(echo, ping));
    ping.l4_src = 0;  // echo reply
    EXPECT_FALSE(matches(echo, ping));
    EXPECT_EQ(compile_match({{"eth_type", "ipv6"}, {"ip_proto", "icmpv6"}, {"icmp_type", 135}})
                  .entries[0]
                  .value.l4_src,
              135);
    EXPECT_EQ(match_error({{"eth_type", "ipv4"}, {"ip_proto", "icmp"}, {"icmp_type", 256}}),
              "rules[0].match.icmp_type: must be an integer in 0..255");
}

TEST(RuleConfig, TcpFlags) {
    const json tcp = {{"eth_type", "ipv4"}, {"ip_proto", "tcp"}};
    auto flags = [&](const json& v) {
        json m = tcp;
        m["tcp_flags"] = v;
        return m;
    };
    RuleSpec syn = compile_match(flags("+syn-ack"));
    EXPECT_EQ(syn.entries[0].value.tcp_flags, 0x02);
    EXPECT_EQ(syn.entries[0].mask.tcp_flags, 0x12);
    EXPECT_TRUE(matches(syn, tcp_key()));
    EXPECT_TRUE(matches(syn, tcp_key_with([](FlowKey& k) { k.tcp_flags = 0x02 | 0x08; })));
    EXPECT_FALSE(matches(syn, tcp_key_with([](FlowKey& k) { k.tcp_flags = 0x12; })));
    EXPECT_FALSE(matches(syn, tcp_key_with([](FlowKey& k) { k.tcp_flags = 0x10; })));
    RuleSpec hex = compile_match(flags("0x02/0x12"));
    EXPECT_EQ(hex.entries[0].value.tcp_flags, 0x02);
    EXPECT_EQ(hex.entries[0].mask.tcp_flags, 0x12);
    RuleSpec all = compile_match(flags("+fin+syn+rst+psh+ack+urg+ece+cwr"));
    EXPECT_EQ(all.entries[0].value.tcp_flags, 0xff);
    EXPECT_EQ(all.entries[0].mask.tcp_flags, 0xff);
    RuleSpec clear = compile_match(flags("-rst"));
    EXPECT_EQ(clear.entries[0].value.tcp_flags, 0);
    EXPECT_EQ(clear.entries[0].mask.tcp_flags, 0x04);

    EXPECT_EQ(match_error(flags("+syn+syn")), "rules[0].match.tcp_flags: flag syn given twice");
    EXPECT_EQ(match_error(flags("+syn-syn")), "rules[0].match.tcp_flags: flag syn given twice");
    EXPECT_EQ(match_error(flags("+syn+foo")),
              "rules[0].match.tcp_flags: unknown flag \"foo\" (flags: fin syn rst psh ack urg "
              "ece cwr)");
    EXPECT_EQ(match_error(flags("0x12/0x02")),
              "rules[0].match.tcp_flags: 0x12/0x02 has bits outside its mask");
    EXPECT_EQ(match_error(flags("syn")),
              "rules[0].match.tcp_flags: must be flags like \"+syn-ack\" or a masked value "
              "\"0x02/0x12\"");
    EXPECT_EQ(match_error(flags(256)),
              "rules[0].match.tcp_flags: must be flags like \"+syn-ack\" or a masked value "
              "\"0x02/0x12\"");
}

TEST(RuleConfig, ConntrackFields) {
    RuleSpec est = compile_match({{"ct_state", "+trk+est-new"}});
    EXPECT_EQ(est.entries[0].value.ct_state, kCtTracked | kCtEstablished);
    EXPECT_EQ(est.entries[0].mask.ct_state, kCtTracked | kCtEstablished | kCtNew);
    EXPECT_TRUE(matches(est, tcp_key_with([](FlowKey& k) {
                            k.ct_state = kCtTracked | kCtEstablished | kCtReply;
                        })));
    EXPECT_FALSE(matches(est, tcp_key_with([](FlowKey& k) { k.ct_state = kCtTracked | kCtNew; })));
    EXPECT_FALSE(matches(est, tcp_key()));  // untracked
    RuleSpec names = compile_match({{"ct_state", "+new+est+rel+rpl+inv+trk"}});
    EXPECT_EQ(names.entries[0].value.ct_state, 0x3f);
    RuleSpec hex = compile_match({{"ct_state", "0x22/0x23"}});
    EXPECT_EQ(hex.entries[0].value.ct_state, 0x22);
    EXPECT_EQ(hex.entries[0].mask.ct_state, 0x23);
    EXPECT_EQ(match_error({{"ct_state", "+trk+ack"}}),
              "rules[0].match.ct_state: unknown flag \"ack\" (flags: new est rel rpl inv trk)");

    RuleSpec zone = compile_match({{"ct_zone", 65535}});
    EXPECT_EQ(zone.entries[0].value.ct_zone, 65535);
    EXPECT_EQ(zone.entries[0].mask.ct_zone, 0xffff);
    EXPECT_TRUE(matches(zone, tcp_key_with([](FlowKey& k) { k.ct_zone = 65535; })));
    EXPECT_FALSE(matches(zone, tcp_key()));
    EXPECT_EQ(match_error({{"ct_zone", 65536}}),
              "rules[0].match.ct_zone: must be an integer in 0..65535");

    RuleSpec mark = compile_match({{"ct_mark", 5}});
    EXPECT_EQ(mark.entries[0].value.ct_mark, 5u);
    EXPECT_EQ(mark.entries[0].mask.ct_mark, 0xffffffffu);
    RuleSpec masked = compile_match({{"ct_mark", "0x5/0xff"}});
    EXPECT_EQ(masked.entries[0].mask.ct_mark, 0xffu);
    EXPECT_TRUE(matches(masked, tcp_key_with([](FlowKey& k) { k.ct_mark = 0xabcd05; })));
    EXPECT_FALSE(matches(masked, tcp_key_with([](FlowKey& k) { k.ct_mark = 0x06; })));
    EXPECT_EQ(compile_match({{"ct_mark", 4294967295u}}).entries[0].value.ct_mark, 0xffffffffu);
    EXPECT_EQ(match_error({{"ct_mark", 4294967296u}}),
              "rules[0].match.ct_mark: must be 0..4294967295 or a masked value \"0x5/0xff\"");
    EXPECT_EQ(match_error({{"ct_mark", "0x5/0x4"}}),
              "rules[0].match.ct_mark: 0x5/0x4 has bits outside its mask");
}

TEST(RuleConfig, AllFieldsTogether) {
    RuleSpec spec = compile_match({{"in_port", "vm1"},
                                   {"eth_src", "02:00:00:00:00:01"},
                                   {"eth_dst", "02:00:00:00:00:02"},
                                   {"vlan", "none"},
                                   {"eth_type", "ipv4"},
                                   {"ip_src", "10.0.0.0/8"},
                                   {"ip_dst", "192.168.0.1"},
                                   {"ip_proto", "tcp"},
                                   {"l4_src", "1024-65535"},
                                   {"l4_dst", 80},
                                   {"tcp_flags", "+syn"},
                                   {"ct_state", "-trk"},
                                   {"ct_zone", 0},
                                   {"ct_mark", 0}});
    EXPECT_EQ(spec.entries.size(), 6u);
    EXPECT_TRUE(matches(spec, tcp_key()));
    const std::vector<std::function<void(FlowKey&)>> breakers{
        [](FlowKey& k) { k.in_port = 2; },        [](FlowKey& k) { k.eth_src[1] = 1; },
        [](FlowKey& k) { k.eth_dst[5] = 1; },     [](FlowKey& k) { k.vlan = 1; },
        [](FlowKey& k) { k.ethertype = 0x0806; }, [](FlowKey& k) { k.ip_src[0] = 11; },
        [](FlowKey& k) { k.ip_dst[3] = 2; },      [](FlowKey& k) { k.ip_proto = 17; },
        [](FlowKey& k) { k.l4_src = 1023; },      [](FlowKey& k) { k.l4_dst = 443; },
        [](FlowKey& k) { k.tcp_flags = 0x10; },   [](FlowKey& k) { k.ct_state = kCtTracked; },
        [](FlowKey& k) { k.ct_zone = 1; },        [](FlowKey& k) { k.ct_mark = 1; },
        [](FlowKey& k) { k.ip_version = 6; },
    };
    for (size_t i = 0; i < breakers.size(); ++i) {
        EXPECT_FALSE(matches(spec, tcp_key_with(breakers[i]))) << "breaker " << i;
    }
}

TEST(RuleConfig, Prerequisites) {
    EXPECT_EQ(match_error({{"ip_src", "10.0.0.0/8"}, {"ipv6_dst", "2001:db8::/32"}}),
              "rules[0].match.ipv6_dst: cannot be combined with the IPv4 field ip_src");
    EXPECT_EQ(match_error({{"eth_type", "arp"}, {"ip_dst", "10.0.0.1"}}),
              "rules[0].match.ip_dst: requires eth_type ipv4 (0x0800), not 0x0806");
    EXPECT_EQ(match_error({{"eth_type", "ipv4"}, {"ipv6_src", "::1"}}),
              "rules[0].match.ipv6_src: requires eth_type ipv6 (0x86dd), not 0x0800");
    EXPECT_EQ(match_error({{"ip_proto", "tcp"}}),
              "rules[0].match.ip_proto: requires an IP match: ip_src, ip_dst, ipv6_src, ipv6_dst "
              "or eth_type ipv4/ipv6");
    EXPECT_EQ(match_error({{"eth_type", "arp"}, {"ip_proto", 6}}),
              "rules[0].match.ip_proto: requires an IP match: ip_src, ip_dst, ipv6_src, ipv6_dst "
              "or eth_type ipv4/ipv6");
    EXPECT_EQ(match_error({{"l4_dst", 80}}),
              "rules[0].match.l4_dst: requires ip_proto tcp, udp or sctp");
    EXPECT_EQ(match_error({{"eth_type", "ipv4"}, {"ip_proto", "icmp"}, {"l4_src", 80}}),
              "rules[0].match.l4_src: requires ip_proto tcp, udp or sctp");
    EXPECT_EQ(match_error({{"eth_type", "ipv4"}, {"ip_proto", "tcp"}, {"icmp_type", 8}}),
              "rules[0].match.icmp_type: requires ip_proto icmp or icmpv6");
    EXPECT_EQ(match_error({{"icmp_code", 0}}),
              "rules[0].match.icmp_code: requires ip_proto icmp or icmpv6");
    EXPECT_EQ(match_error({{"eth_type", "ipv4"}, {"ip_proto", "udp"}, {"tcp_flags", "+syn"}}),
              "rules[0].match.tcp_flags: requires ip_proto tcp");
    // Addresses satisfy ip_proto without eth_type.
    EXPECT_TRUE(
        matches(compile_match({{"ip_dst", "192.168.0.1"}, {"ip_proto", "tcp"}}), tcp_key()));
    // A malformed field is reported before the prerequisites.
    EXPECT_EQ(match_error({{"l4_dst", "x"}}),
              "rules[0].match.l4_dst: must be a port 0..65535, a range \"1000-2000\" or a masked "
              "value \"0x0050/0xfff0\"");
}

TEST(RuleConfig, CrossProductAndCap) {
    const json tcp = {{"eth_type", "ipv4"}, {"ip_proto", "tcp"}};
    auto ports = [&](const char* src, const char* dst) {
        json m = tcp;
        m["l4_src"] = src;
        m["l4_dst"] = dst;
        return m;
    };
    RuleSpec spec = compile_match(ports("1000-2000", "80-81"));
    EXPECT_EQ(spec.entries.size(), 8u * 1u);
    RuleSpec both = compile_match(ports("10-20", "100-200"));
    EXPECT_EQ(both.entries.size(),
              port_range_to_masks(10, 20).size() * port_range_to_masks(100, 200).size());
    for (uint16_t s = 0; s < 40; ++s) {
        for (uint16_t d = 80; d < 220; ++d) {
            const FlowKey k = tcp_key_with([&](FlowKey& key) {
                key.l4_src = s;
                key.l4_dst = d;
            });
            ASSERT_EQ(matches(both, k), s >= 10 && s <= 20 && d >= 100 && d <= 200)
                << s << " " << d;
        }
    }
    // Each entry matches exactly one (src prefix, dst prefix) pair: no duplicates.
    for (size_t i = 0; i < both.entries.size(); ++i) {
        for (size_t j = 0; j < i; ++j) {
            EXPECT_NE(
                std::memcmp(&both.entries[i].value, &both.entries[j].value, sizeof(FlowKey)) == 0 &&
                    std::memcmp(&both.entries[i].mask, &both.entries[j].mask, sizeof(FlowKey)) == 0,
                true);
        }
    }
    ASSERT_EQ(port_range_to_masks(1, 510).size(), 16u);
    ASSERT_EQ(port_range_to_masks(1, 1022).size(), 18u);
    EXPECT_EQ(compile_match(ports("1-510", "1-510")).entries.size(), 256u);
    EXPECT_EQ(match_error(ports("1-510", "1-1022")),
              "rules[0].match: l4_src and l4_dst expand to 16 x 18 = 288 entries, more than 256");
    EXPECT_EQ(match_error(ports("1-65534", "1-65534")),
              "rules[0].match: l4_src and l4_dst expand to 30 x 30 = 900 entries, more than 256");
}

// ---------------------------------------------------------------------------------------------
// Actions.

TEST(RuleConfig, EachActionEncodes) {
    RuleSpec spec = compile(with_actions({"output:vm2", "push_vlan:10", "pop_vlan", "set_vlan:4094",
                                          "mirror:vm3", "meter:7", "normal"}));
    const CompiledRule& e = spec.entries[0];
    ASSERT_EQ(e.n_actions, 7);
    const Action expected[7] = {
        {ActionType::kOutput, kActionSendCopy, 2, 0},
        {ActionType::kPushVlan, 0, 10, 0},
        {ActionType::kPopVlan, 0, 0, 0},
        {ActionType::kSetVlan, 0, 4094, 0},
        {ActionType::kMirror, 0, 3, 0},
        {ActionType::kMeter, 0, 0, 7},
        {ActionType::kNormal, 0, 0, 0},
    };
    for (int i = 0; i < 7; ++i) {
        EXPECT_EQ(e.actions[i].type, expected[i].type) << i;
        EXPECT_EQ(e.actions[i].flags, expected[i].flags) << i;
        EXPECT_EQ(e.actions[i].arg16, expected[i].arg16) << i;
        EXPECT_EQ(e.actions[i].arg32, expected[i].arg32) << i;
    }

    RuleSpec flood = compile(with_actions({"mirror:vm3", "flood"}));
    EXPECT_EQ(flood.entries[0].actions[1].type, ActionType::kFlood);
    EXPECT_EQ(error_of(with_actions({"normal", "output:vm2"})),
              "rules[0].actions[0]: normal must be the last action");
    EXPECT_EQ(error_of(with_actions({"flood", "mirror:vm3"})),
              "rules[0].actions[0]: flood must be the last action");

    RuleSpec drop = compile(with_actions({"drop"}));
    EXPECT_EQ(drop.entries[0].n_actions, 1);
    EXPECT_EQ(drop.entries[0].actions[0].type, ActionType::kDrop);

    RuleSpec go = compile(with_actions({"output:uplink", "goto_table:63"}, 62));
    EXPECT_EQ(go.entries[0].actions[0].arg16, 7);
    EXPECT_EQ(go.entries[0].actions[1].type, ActionType::kGotoTable);
    EXPECT_EQ(go.entries[0].actions[1].arg16, 63);
    EXPECT_TRUE(go.entries[0].actions[0].flags & kActionSendCopy);  // goto_table uses it after
}

TEST(RuleConfig, AnOutputSendsACopyOnlyWhenALaterActionUsesThePacket) {
    auto copies = [](std::vector<std::string> actions) {
        RuleSpec spec = compile(with_actions(actions));
        std::vector<bool> out;
        for (unsigned i = 0; i < spec.entries[0].n_actions; ++i)
            if (spec.entries[0].actions[i].type == ActionType::kOutput)
                out.push_back((spec.entries[0].actions[i].flags & kActionSendCopy) != 0);
        return out;
    };
    EXPECT_EQ(copies({"output:uplink"}), std::vector<bool>{false});
    EXPECT_EQ(copies({"output:uplink", "push_vlan:5", "output:vm2"}),
              (std::vector<bool>{true, false}));
    EXPECT_EQ(copies({"output:uplink", "mirror:vm3"}), std::vector<bool>{true});
    EXPECT_EQ(copies({"output:uplink", "normal"}), std::vector<bool>{true});
    EXPECT_EQ(copies({"output:uplink", "flood"}), std::vector<bool>{true});
    EXPECT_EQ(copies({"output:uplink", "ct", "normal"}), std::vector<bool>{true});
    EXPECT_EQ(copies({"mirror:vm3", "output:uplink"}), std::vector<bool>{false});
}

TEST(RuleConfig, CtEncoding) {
    auto ct = [](const char* text, int table = 0) {
        const bool has_table = std::string_view(text).find("table=") != std::string_view::npos;
        RuleSpec spec = compile(has_table ? with_actions({text}, table)
                                          : with_actions({text, "normal"}, table));
        EXPECT_EQ(spec.entries[0].actions[0].type, ActionType::kCt) << text;
        return spec.entries[0].actions[0];
    };
    Action a = ct("ct");
    EXPECT_EQ(a.arg16, 0);
    EXPECT_EQ(a.arg32, 0u);
    a = ct("ct()");
    EXPECT_EQ(a.arg32, 0u);
    a = ct("ct(commit)");
    EXPECT_EQ(a.arg32, 1u);
    a = ct("ct(zone=5,commit,table=1)");
    EXPECT_EQ(a.arg16, 5);
    EXPECT_EQ(a.arg32, 1u | (1u << 8) | (1u << 16));
    a = ct("ct(table=63,zone=65535)", 2);
    EXPECT_EQ(a.arg16, 65535);
    EXPECT_EQ(a.arg32, (63u << 8) | (1u << 16));
    a = ct("ct(nat)");
    EXPECT_EQ(a.arg32, kCtNat);
    a = ct("ct(commit,mark=0xff)");
    EXPECT_EQ(a.arg32, kCtCommit | kCtSetMark);
}

TEST(RuleConfig, CtNatAndMarkGoIntoTheRule) {
    RuleSpec s =
        compile(with_actions({"ct(commit,nat(src=10.1.0.1-10.1.0.9:1024-2047),mark=7)", "normal"}));
    const CompiledRule& r = s.entries[0];
    EXPECT_EQ(r.actions[0].arg32, kCtCommit | kCtNat | kCtSetMark);
    EXPECT_EQ(r.ct_mark, 7u);
    EXPECT_EQ(r.nat.kind, NatSpec::kSrc);
    EXPECT_EQ(r.nat.ip_version, 4);
    EXPECT_EQ(r.nat.port_min, 1024);
    EXPECT_EQ(r.nat.port_max, 2047);
    const uint8_t lo[4] = {10, 1, 0, 1}, hi[4] = {10, 1, 0, 9};
    EXPECT_EQ(std::memcmp(r.nat.addr_min, lo, 4), 0);
    EXPECT_EQ(std::memcmp(r.nat.addr_max, hi, 4), 0);

    s = compile(with_actions({"ct(commit,nat(dst=[fd00::5]:80))", "normal"}));
    EXPECT_EQ(s.entries[0].nat.kind, NatSpec::kDst);
    EXPECT_EQ(s.entries[0].nat.ip_version, 6);
    EXPECT_EQ(s.entries[0].nat.port_min, 80);
    EXPECT_EQ(s.entries[0].nat.port_max, 80);
    EXPECT_EQ(s.entries[0].nat.addr_min[0], 0xfd);
    EXPECT_EQ(s.entries[0].nat.addr_max[15], 5);

    s = compile(with_actions({"ct(zone=3,nat,table=1)"}));
    EXPECT_EQ(s.entries[0].nat.kind, NatSpec::kNone);
    EXPECT_EQ(s.entries[0].actions[0].arg32 & kCtNat, kCtNat);
}

TEST(RuleConfig, ActionErrors) {
    EXPECT_EQ(error_of(with_actions(json::array())), "rules[0].actions: must not be empty");
    EXPECT_EQ(error_of(with_actions("drop")),
              "rules[0].actions: must be a non-empty array of action strings");
    EXPECT_EQ(error_of(with_actions({"normal", "normal", "normal", "normal", "normal", "normal",
                                     "normal", "normal", "normal"})),
              "rules[0].actions: must have at most 8 actions, has 9");
    EXPECT_EQ(error_of(with_actions({"normal", 5})),
              "rules[0].actions[1]: must be a string like \"output:vm1\"");
    EXPECT_EQ(error_of(with_actions({"normal", "forward:vm1"})),
              "rules[0].actions[1]: unknown action \"forward\"");
    EXPECT_EQ(error_of(with_actions({"Drop"})), "rules[0].actions[0]: unknown action \"Drop\"");
    EXPECT_EQ(error_of(with_actions({"output:vm1", "drop"})),
              "rules[0].actions[1]: drop must be the only action");
    EXPECT_EQ(error_of(with_actions({"drop", "output:vm1"})),
              "rules[0].actions[0]: drop must be the only action");
    EXPECT_EQ(error_of(with_actions({"drop:1"})), "rules[0].actions[0]: drop takes no argument");
    EXPECT_EQ(error_of(with_actions({"pop_vlan:"})),
              "rules[0].actions[0]: pop_vlan takes no argument");
    EXPECT_EQ(error_of(with_actions({"output"})),
              "rules[0].actions[0]: output needs an argument: output:PORT");
    EXPECT_EQ(error_of(with_actions({"mirror:"})),
              "rules[0].actions[0]: mirror needs an argument: mirror:PORT");
    EXPECT_EQ(error_of(with_actions({"output:vm9"}), ErrorCode::kNotFound),
              "rules[0].actions[0]: no port named vm9");
    EXPECT_EQ(error_of(with_actions({"normal", "mirror:vm0"}), ErrorCode::kNotFound),
              "rules[0].actions[1]: no port named vm0");
    EXPECT_EQ(error_of(with_actions({"push_vlan:4095"})),
              "rules[0].actions[0]: VLAN id must be 0..4094, not \"4095\"");
    EXPECT_EQ(error_of(with_actions({"set_vlan:ten"})),
              "rules[0].actions[0]: VLAN id must be 0..4094, not \"ten\"");
    EXPECT_EQ(error_of(with_actions({"meter:2", "normal"}), ErrorCode::kNotFound),
              "rules[0].actions[0]: no meter 2");
    EXPECT_EQ(error_of(with_actions({"meter:4294967296"})),
              "rules[0].actions[0]: meter id must be 0..4294967295, not \"4294967296\"");
    EXPECT_EQ(error_of(with_actions({"goto_table:1", "normal"})),
              "rules[0].actions[0]: goto_table must be the last action");
    EXPECT_EQ(error_of(with_actions({"goto_table:2"}, 2)),
              "rules[0].actions[0]: goto_table must be a table in 3..63 (after the rule's table "
              "2), not \"2\"");
    EXPECT_EQ(error_of(with_actions({"goto_table:1"}, 2)),
              "rules[0].actions[0]: goto_table must be a table in 3..63 (after the rule's table "
              "2), not \"1\"");
    EXPECT_EQ(error_of(with_actions({"goto_table:64"})),
              "rules[0].actions[0]: goto_table must be a table in 1..63 (after the rule's table "
              "0), not \"64\"");
    EXPECT_EQ(error_of(with_actions({"goto_table:64"}, 63)),
              "rules[0].actions[0]: goto_table: the rule is in the last table (63)");
    // ct parameters.
    EXPECT_EQ(error_of(with_actions({"ct(zone=65536)"})),
              "rules[0].actions[0]: ct zone must be 0..65535, not \"65536\"");
    EXPECT_EQ(error_of(with_actions({"ct(zone=1,zone=2)"})),
              "rules[0].actions[0]: ct parameter zone given twice");
    EXPECT_EQ(error_of(with_actions({"ct(commit,commit)"})),
              "rules[0].actions[0]: ct parameter commit given twice");
    EXPECT_EQ(error_of(with_actions({"ct(table=1)"}, 1)),
              "rules[0].actions[0]: ct table must be a table in 2..63 (after the rule's table "
              "1), not \"1\"");
    EXPECT_EQ(error_of(with_actions({"ct(commit,nat(src=10.0.0.1,random))"})),
              "rules[0].actions[0]: bad nat address \"10.0.0.1,random\" (expected "
              "nat(src=ADDR[-ADDR][:PORT[-PORT]]) or nat(dst=...))");
    EXPECT_EQ(error_of(with_actions({"ct(nat(src=10.0.0.1))"})),
              "rules[0].actions[0]: nat(src=...) / nat(dst=...) needs commit: it binds new "
              "connections");
    EXPECT_EQ(error_of(with_actions({"ct(commit,nat(to=10.0.0.1))"})),
              "rules[0].actions[0]: bad nat parameter \"to=10.0.0.1\" (expected "
              "nat(src=ADDR[-ADDR][:PORT[-PORT]]) or nat(dst=...))");
    EXPECT_EQ(error_of(with_actions({"ct(commit,nat(src=10.0.0.2-10.0.0.1))"})),
              "rules[0].actions[0]: nat address range is empty: 10.0.0.2-10.0.0.1");
    EXPECT_EQ(error_of(with_actions({"ct(commit,nat(src=10.0.0.1-[fd00::1]))"})),
              "rules[0].actions[0]: nat address range mixes IPv4 and IPv6");
    EXPECT_EQ(error_of(with_actions({"ct(commit,nat(src=10.0.0.1:0-80))"})),
              "rules[0].actions[0]: bad nat port range \"0-80\" (ports are 1..65535)");
    EXPECT_EQ(error_of(with_actions({"ct(commit,nat(src=10.0.0.1:90-80))"})),
              "rules[0].actions[0]: nat port range is empty: 90-80");
    EXPECT_EQ(error_of(with_actions({"ct(commit,nat,nat)"})),
              "rules[0].actions[0]: ct parameter nat given twice");
    EXPECT_EQ(error_of(with_actions({"ct(mark=1)"})),
              "rules[0].actions[0]: ct mark=N needs commit");
    EXPECT_EQ(error_of(with_actions({"ct(commit,mark=4294967296)"})),
              "rules[0].actions[0]: ct mark must be 0..4294967295, not \"4294967296\"");
    EXPECT_EQ(error_of(with_actions({"ct(table=1)", "normal"})),
              "rules[0].actions[0]: ct(table=N) must be the last action");
    EXPECT_EQ(error_of(with_actions({"ct(commit)", "ct(zone=1)", "normal"})),
              "rules[0].actions[1]: a rule has at most one ct action");
    EXPECT_EQ(error_of(with_actions({"ct(commit,)"})), "rules[0].actions[0]: empty ct parameter");
    EXPECT_EQ(error_of(with_actions({"ct(force)"})),
              "rules[0].actions[0]: unknown ct parameter \"force\" (expected zone=N, commit, "
              "nat[(...)], mark=N, table=N)");
    EXPECT_EQ(error_of(with_actions({"ct(zone=1"})),
              "rules[0].actions[0]: unbalanced parentheses in ct(...)");
    EXPECT_EQ(error_of(with_actions({"ct(nat(src=1)"})),
              "rules[0].actions[0]: unbalanced parentheses in ct(...)");
    EXPECT_EQ(error_of(with_actions({"ct:5"})),
              "rules[0].actions[0]: ct takes parameters in parentheses: "
              "ct(zone=N,commit,nat(...),mark=N,table=N)");
}

TEST(RuleConfig, MissingContextCallbacksMeanNothingExists) {
    Result<RuleSpec> r = parse_rule(with_actions({"output:vm1"}), RuleContext{}, kPath);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
    r = parse_rule(with_actions({"meter:1"}), RuleContext{}, kPath);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "rules[0].actions[0]: no meter 1");
}

// ---------------------------------------------------------------------------------------------
// Port ranges.

// The number of maximal prefixes inside [lo, hi], counted on the binary trie independently of
// port_range_to_masks: any exact prefix cover needs at least this many.
size_t minimal_cover_size(uint32_t lo, uint32_t hi, uint32_t base = 0, uint32_t size = 0x10000) {
    const uint32_t last = base + size - 1;
    if (last < lo || base > hi) return 0;
    if (base >= lo && last <= hi) return 1;
    return minimal_cover_size(lo, hi, base, size / 2) +
           minimal_cover_size(lo, hi, base + size / 2, size / 2);
}

void expect_exact_minimal_cover(uint16_t lo, uint16_t hi) {
    const auto cover = port_range_to_masks(lo, hi);
    EXPECT_EQ(cover.size(), minimal_cover_size(lo, hi)) << lo << "-" << hi;
    for (const auto& [value, mask] : cover) {
        EXPECT_EQ(value & mask, value) << lo << "-" << hi;
        // A prefix: the mask is ones then zeros.
        EXPECT_EQ(static_cast<uint16_t>(~mask) & static_cast<uint16_t>(~mask + 1), 0)
            << std::hex << mask;
    }
    // Every port is matched by exactly one prefix iff it is in the range.
    for (uint32_t p = 0; p <= 0xffff; ++p) {
        int hits = 0;
        for (const auto& [value, mask] : cover) hits += (p & mask) == value;
        ASSERT_EQ(hits, (p >= lo && p <= hi) ? 1 : 0) << lo << "-" << hi << " port " << p;
    }
}

TEST(PortRangeToMasks, StandardSplit) {
    const std::vector<std::pair<uint16_t, uint16_t>> expected{
        {1000, 0xfff8}, {1008, 0xfff0}, {1024, 0xfe00}, {1536, 0xff00},
        {1792, 0xff80}, {1920, 0xffc0}, {1984, 0xfff0}, {2000, 0xffff}};
    EXPECT_EQ(port_range_to_masks(1000, 2000), expected);
    EXPECT_EQ(port_range_to_masks(0, 65535), (std::vector<std::pair<uint16_t, uint16_t>>{{0, 0}}));
    EXPECT_EQ(port_range_to_masks(80, 80),
              (std::vector<std::pair<uint16_t, uint16_t>>{{80, 0xffff}}));
    EXPECT_EQ(port_range_to_masks(65535, 65535),
              (std::vector<std::pair<uint16_t, uint16_t>>{{65535, 0xffff}}));
    EXPECT_EQ(port_range_to_masks(32768, 65535),
              (std::vector<std::pair<uint16_t, uint16_t>>{{32768, 0x8000}}));
    EXPECT_EQ(port_range_to_masks(1, 65534).size(), 30u);  // the worst case
    EXPECT_TRUE(port_range_to_masks(2, 1).empty());
}

TEST(PortRangeToMasks, ExhaustivelyExactAndMinimal) {
    for (const auto& [lo, hi] : std::vector<std::pair<uint16_t, uint16_t>>{{1000, 2000},
                                                                           {0, 0},
                                                                           {0, 65535},
                                                                           {1, 65534},
                                                                           {1024, 65535},
                                                                           {0, 1023},
                                                                           {65535, 65535},
                                                                           {5, 6},
                                                                           {32767, 32768},
                                                                           {49152, 65534}}) {
        expect_exact_minimal_cover(lo, hi);
    }
    std::mt19937 rng(12345);
    for (int i = 0; i < 40; ++i) {
        auto a = static_cast<uint16_t>(rng());
        auto b = static_cast<uint16_t>(rng());
        if (a > b) std::swap(a, b);
        expect_exact_minimal_cover(a, b);
    }
}

}  // namespace
}  // namespace ferry
