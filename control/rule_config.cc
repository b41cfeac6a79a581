// Flow rules: the JSON of docs/rules.md parsed, validated and compiled into the masked
// CompiledRule entries the classifier holds.
//
// A rule is checked in a fixed order and the first error ends the parse: the object's type,
// unknown keys, id, table, priority, then the match (unknown keys, each field in kMatchFields
// order, the prerequisites between fields, the size of the port-range expansion), then the
// actions in order. Every error message starts with the JSON path of the offending value.
//
// Adding a match field: write its parser, add it to kMatchFields (and its prerequisites to
// check_prerequisites), document it in docs/rules.md. Adding an action: add the ActionType, its
// row in kActionSyntax (the static_assert keeps the table in step with the enum), and docs.
//
// config.cc's validation is a table of rules that also generates a JSON Schema; rule fields are
// too irregular for it (one field takes a number, a range, a masked value or a name), so this
// file parses each field by hand with the same path-named messages.
//
// Context: control, everything in this file.
#include "control/rule_config.h"

#include "control/json_path.h"
#include "control/nat_config.h"
#include "dataplane/ether_type.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <rte_ether.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdio>
#include <limits>
#include <string_view>
#include <tuple>
#include <utility>

namespace ferry {
namespace {

using nlohmann::json;
using PortMask = std::pair<uint16_t, uint16_t>;

// A rule's port ranges expand into the cross product of their prefixes; this bounds the
// classifier entries (and subtables) a single rule can cost.
constexpr size_t kMaxEntriesPerRule = 256;
constexpr uint16_t kMaxMatchVid = 4095;  // any VID a tag can carry
constexpr uint16_t kMaxPushVid = 4094;   // 4095 is reserved by 802.1Q

struct Named {
    std::string_view name;
    uint16_t value;
};

constexpr std::array<Named, 3> kEtherTypeNames{{
    {"ipv4", kEtherTypeIpv4},
    {"ipv6", kEtherTypeIpv6},
    {"arp", kEtherTypeArp},
}};
constexpr std::array<Named, 5> kIpProtoNames{{
    {"tcp", IPPROTO_TCP},
    {"udp", IPPROTO_UDP},
    {"icmp", IPPROTO_ICMP},
    {"icmpv6", IPPROTO_ICMPV6},
    {"sctp", IPPROTO_SCTP},
}};
// Bit order of the TCP header's flags byte, as the parser stores it in FlowKey::tcp_flags.
constexpr std::array<Named, 8> kTcpFlagNames{{
    {"fin", 0x01},
    {"syn", 0x02},
    {"rst", 0x04},
    {"psh", 0x08},
    {"ack", 0x10},
    {"urg", 0x20},
    {"ece", 0x40},
    {"cwr", 0x80},
}};
constexpr std::array<Named, 6> kCtStateNames{{
    {"new", kCtNew},
    {"est", kCtEstablished},
    {"rel", kCtRelated},
    {"rpl", kCtReply},
    {"inv", kCtInvalid},
    {"trk", kCtTracked},
}};

template <size_t N>
const Named* find_name(const std::array<Named, N>& names, std::string_view name) {
    for (const Named& n : names) {
        if (n.name == name) return &n;
    }
    return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Paths, errors and scalar parsers.

using json_path::at;
using json_path::invalid;

Error not_found(const std::string& path, const std::string& what) {
    return make_error(ErrorCode::kNotFound, (path.empty() ? "<root>" : path) + ": " + what);
}

std::string in_quotes(std::string_view s) {
    // Appended piecewise: GCC 12 warns falsely (-Wrestrict) on "\"" + std::string(s).
    std::string out;
    out.reserve(s.size() + 2);
    out += '"';
    out += s;
    out += '"';
    return out;
}

std::string hex16(uint16_t v) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "0x%04x", v);
    return buf;
}

/// Parses a decimal number, or a 0x-prefixed hexadecimal one when hex is allowed.
/// @return the value, or nullopt if s is empty, has another character, or exceeds max.
std::optional<uint64_t> parse_number(std::string_view s, uint64_t max, bool hex = true) {
    unsigned base = 10;
    if (hex && s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s.remove_prefix(2);
    }
    if (s.empty()) return std::nullopt;
    uint64_t v = 0;
    for (char c : s) {
        unsigned d;
        if (c >= '0' && c <= '9') {
            d = static_cast<unsigned>(c - '0');
        } else if (base == 16 && c >= 'a' && c <= 'f') {
            d = static_cast<unsigned>(c - 'a' + 10);
        } else if (base == 16 && c >= 'A' && c <= 'F') {
            d = static_cast<unsigned>(c - 'A' + 10);
        } else {
            return std::nullopt;
        }
        if (d > max || v > (max - d) / base) return std::nullopt;
        v = v * base + d;
    }
    return v;
}

/// A JSON integer in 0..max, or nullopt for anything else (negative, float, string, too big).
std::optional<uint64_t> json_uint(const json& v, uint64_t max) {
    if (!v.is_number_integer()) return std::nullopt;
    // Built documents hold signed integers even when non-negative; parsed ones unsigned.
    if (!v.is_number_unsigned() && v.get<int64_t>() < 0) return std::nullopt;
    const auto u = v.get<uint64_t>();
    if (u > max) return std::nullopt;
    return u;
}

/// A JSON integer in int32_t's range, or nullopt.
std::optional<int32_t> json_int32(const json& v) {
    if (!v.is_number_integer()) return std::nullopt;
    if (v.is_number_unsigned()) {
        const auto u = v.get<uint64_t>();
        if (u > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) return std::nullopt;
        return static_cast<int32_t>(u);
    }
    const auto s = v.get<int64_t>();
    if (s < std::numeric_limits<int32_t>::min() || s > std::numeric_limits<int32_t>::max())
        return std::nullopt;
    return static_cast<int32_t>(s);
}

/// The slot of a port name; nullopt for an unknown name or a context without ports.
std::optional<uint16_t> resolve_port(const RuleContext& ctx, const std::string& name) {
    if (!ctx.port_slot) return std::nullopt;
    return ctx.port_slot(name);
}

struct Masked {
    uint64_t value = 0;
    uint64_t mask = 0;
};

/// Parses a JSON integer (exact match) or a string "V" or "V/M" of at most `bits` bits.
/// @param what the message for a value of the wrong form ("must be ...")
/// @return the pair, or kInvalidParams (also when V has bits outside M).
Result<Masked> parse_masked(const json& v, unsigned bits, const std::string& path,
                            const std::string& what) {
    const uint64_t all = (uint64_t{1} << bits) - 1;
    if (std::optional<uint64_t> u = json_uint(v, all)) return Masked{*u, all};
    if (!v.is_string()) return invalid(path, what);
    const std::string_view s = v.get_ref<const std::string&>();
    const size_t slash = s.find('/');
    const std::optional<uint64_t> value = parse_number(s.substr(0, slash), all);
    const std::optional<uint64_t> mask =
        slash == std::string_view::npos ? all : parse_number(s.substr(slash + 1), all);
    if (!value || !mask) return invalid(path, what);
    if ((*value & ~*mask) != 0) return invalid(path, std::string(s) + " has bits outside its mask");
    return Masked{*value, *mask};
}

/// Parses flags "+name-name..." (+: must be set, -: must be clear) from names, or a masked
/// 8-bit number. @return the value/mask pair, or kInvalidParams.
template <size_t N>
Result<Masked> parse_flags(const json& v, const std::array<Named, N>& names,
                           const std::string& path, const std::string& what) {
    if (!v.is_string() || v.get_ref<const std::string&>().empty()) {
        return parse_masked(v, 8, path, what);
    }
    const std::string_view s = v.get_ref<const std::string&>();
    if (s[0] != '+' && s[0] != '-') return parse_masked(v, 8, path, what);
    std::string known;
    for (const Named& n : names) known += (known.empty() ? "" : " ") + std::string(n.name);
    Masked m;
    size_t i = 0;
    while (i < s.size()) {
        const bool set = s[i++] == '+';
        const size_t end = std::min(s.find_first_of("+-", i), s.size());
        const std::string_view name = s.substr(i, end - i);
        i = end;
        const Named* flag = find_name(names, name);
        if (flag == nullptr) {
            return invalid(path, "unknown flag " + in_quotes(name) + " (flags: " + known + ")");
        }
        if ((m.mask & flag->value) != 0) {
            return invalid(path, "flag " + std::string(name) + " given twice");
        }
        m.mask |= flag->value;
        if (set) m.value |= flag->value;
    }
    return m;
}

/// "02:00:00:00:00:01" (two hex digits per byte) into bytes, or nullopt. DPDK's parser does the
/// reading; the length check keeps rules to the one spelling the documents give (DPDK would also
/// take "2:0:0:0:0:1" and "0200:0000:0001"). Context: control.
std::optional<std::array<uint8_t, 6>> parse_mac(std::string_view s) {
    if (s.size() != 17) return std::nullopt;
    const std::string text(s);  // DPDK reads up to a NUL
    rte_ether_addr addr;
    if (rte_ether_unformat_addr(text.c_str(), &addr) != 0) return std::nullopt;
    std::array<uint8_t, 6> mac;
    std::copy(std::begin(addr.addr_bytes), std::end(addr.addr_bytes), mac.begin());
    return mac;
}

// ---------------------------------------------------------------------------------------------
// Match fields. Each parser writes its field into value and mask (value already masked) and
// records what the prerequisites need.

struct MatchState {
    FlowKey value{};
    FlowKey mask{};
    std::vector<PortMask> l4_src;  // empty: l4_src not given (icmp_type writes the key directly)
    std::vector<PortMask> l4_dst;
    std::optional<uint16_t> eth_type;
    std::optional<uint8_t> ip_proto;
};

// Parses one match field's value v (path names it) into m. @return Ok, kInvalidParams, or
// kNotFound for an unknown port name.
using FieldParser = Status (*)(const json& v, const std::string& path, const RuleContext& ctx,
                               MatchState& m);

Status match_in_port(const json& v, const std::string& path, const RuleContext& ctx,
                     MatchState& m) {
    if (!v.is_string()) return invalid(path, "must be a port name");
    const std::string& name = v.get_ref<const std::string&>();
    const std::optional<uint16_t> slot = resolve_port(ctx, name);
    if (!slot) return not_found(path, "no port named " + name);
    m.value.in_port = *slot;
    m.mask.in_port = 0xffff;
    return Ok{};
}

template <uint8_t (FlowKey::*kField)[6]>
Status match_mac(const json& v, const std::string& path, const RuleContext&, MatchState& m) {
    const std::string what =
        "must be a MAC address \"02:00:00:00:00:01\" or a masked one "
        "\"02:00:00:00:00:00/ff:ff:ff:00:00:00\"";
    if (!v.is_string()) return invalid(path, what);
    const std::string_view s = v.get_ref<const std::string&>();
    const size_t slash = s.find('/');
    const auto value = parse_mac(s.substr(0, slash));
    const auto mask = slash == std::string_view::npos
                          ? std::optional<std::array<uint8_t, 6>>(
                                std::array<uint8_t, 6>{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
                          : parse_mac(s.substr(slash + 1));
    if (!value || !mask) return invalid(path, what);
    for (size_t i = 0; i < 6; ++i) {
        if (((*value)[i] & ~(*mask)[i]) != 0) {
            return invalid(path, std::string(s) + " has bits outside its mask");
        }
        (m.value.*kField)[i] = (*value)[i];
        (m.mask.*kField)[i] = (*mask)[i];
    }
    return Ok{};
}

Status match_vlan(const json& v, const std::string& path, const RuleContext&, MatchState& m) {
    if (v.is_string() && v.get_ref<const std::string&>() == "none") {
        m.value.vlan = kNoVlan;
    } else if (std::optional<uint64_t> vid = json_uint(v, kMaxMatchVid)) {
        m.value.vlan = static_cast<uint16_t>(*vid);
    } else {
        return invalid(path, "must be a VLAN id 0..4095 or \"none\"");
    }
    m.mask.vlan = 0xffff;
    return Ok{};
}

Status match_eth_type(const json& v, const std::string& path, const RuleContext&, MatchState& m) {
    std::optional<uint64_t> type = json_uint(v, 0xffff);
    if (!type && v.is_string()) {
        const std::string& s = v.get_ref<const std::string&>();
        if (const Named* n = find_name(kEtherTypeNames, s)) {
            type = n->value;
        } else {
            type = parse_number(s, 0xffff);
        }
    }
    if (!type) {
        return invalid(path,
                       "must be an ethertype: 0..65535, \"0x0800\", \"ipv4\", \"ipv6\" or \"arp\"");
    }
    m.value.ethertype = static_cast<uint16_t>(*type);
    m.mask.ethertype = 0xffff;
    m.eth_type = static_cast<uint16_t>(*type);
    return Ok{};
}

/// An IPv4 (kBytes 4) or IPv6 (kBytes 16) address or prefix into the first kBytes of kField;
/// also matches ip_version.
template <uint8_t (FlowKey::*kField)[16], int kFamily>
Status match_ip(const json& v, const std::string& path, const RuleContext&, MatchState& m) {
    constexpr bool kV4 = kFamily == AF_INET;
    constexpr size_t kBytes = kV4 ? 4 : 16;
    constexpr unsigned kBits = kBytes * 8;
    const char* family = kV4 ? "IPv4" : "IPv6";
    if (!v.is_string()) {
        return invalid(path, std::string("must be an ") + family + " address or prefix like " +
                                 (kV4 ? "\"10.0.0.0/8\"" : "\"2001:db8::/32\""));
    }
    const std::string_view s = v.get_ref<const std::string&>();
    const size_t slash = s.find('/');
    const std::string address(s.substr(0, slash));
    uint8_t bytes[16] = {};
    if (inet_pton(kFamily, address.c_str(), bytes) != 1) {
        return invalid(path, std::string("bad ") + family + " address " + in_quotes(address));
    }
    uint64_t length = kBits;
    if (slash != std::string_view::npos) {
        const std::string_view text = s.substr(slash + 1);
        const std::optional<uint64_t> n = parse_number(text, 255, false);
        if (!n) return invalid(path, "bad prefix length " + in_quotes(text));
        if (*n > kBits) return invalid(path, "bad prefix length " + std::to_string(*n));
        length = *n;
    }
    for (size_t i = 0; i < kBytes; ++i) {
        const uint64_t bits = std::min<uint64_t>(8, length - std::min<uint64_t>(length, 8 * i));
        const auto mask = static_cast<uint8_t>(0xff00u >> bits);
        if ((bytes[i] & ~mask) != 0) {
            return invalid(path, std::string(s) + " has bits outside its mask");
        }
        (m.value.*kField)[i] = bytes[i];
        (m.mask.*kField)[i] = mask;
    }
    m.value.ip_version = kV4 ? 4 : 6;
    m.mask.ip_version = 0xff;
    return Ok{};
}

Status match_ip_proto(const json& v, const std::string& path, const RuleContext&, MatchState& m) {
    std::optional<uint64_t> proto = json_uint(v, 0xff);
    if (!proto && v.is_string()) {
        if (const Named* n = find_name(kIpProtoNames, v.get_ref<const std::string&>())) {
            proto = n->value;
        }
    }
    if (!proto) {
        return invalid(path,
                       "must be 0..255 or one of \"tcp\", \"udp\", \"icmp\", \"icmpv6\", \"sctp\"");
    }
    m.value.ip_proto = static_cast<uint8_t>(*proto);
    m.mask.ip_proto = 0xff;
    m.ip_proto = static_cast<uint8_t>(*proto);
    return Ok{};
}

/// l4_src or l4_dst: a port, a range (expanded into prefixes) or a masked value.
template <std::vector<PortMask> MatchState::*kCover>
Status match_l4_port(const json& v, const std::string& path, const RuleContext&, MatchState& m) {
    const std::string what =
        "must be a port 0..65535, a range \"1000-2000\" or a masked value \"0x0050/0xfff0\"";
    if (v.is_string()) {
        const std::string_view s = v.get_ref<const std::string&>();
        if (const size_t dash = s.find('-'); dash != std::string_view::npos) {
            const std::optional<uint64_t> lo = parse_number(s.substr(0, dash), 0xffff);
            const std::optional<uint64_t> hi = parse_number(s.substr(dash + 1), 0xffff);
            if (!lo || !hi) return invalid(path, what);
            if (*lo > *hi) {
                return invalid(path, "range " + std::string(s) + " is empty (start above end)");
            }
            m.*kCover = port_range_to_masks(static_cast<uint16_t>(*lo), static_cast<uint16_t>(*hi));
            return Ok{};
        }
    }
    Result<Masked> r = parse_masked(v, 16, path, what);
    if (!r) return r.error();
    m.*kCover = {{static_cast<uint16_t>(r->value), static_cast<uint16_t>(r->mask)}};
    return Ok{};
}

/// icmp_type or icmp_code: the parser stores them in l4_src and l4_dst.
template <uint16_t FlowKey::*kField>
Status match_icmp(const json& v, const std::string& path, const RuleContext&, MatchState& m) {
    const std::optional<uint64_t> n = json_uint(v, 0xff);
    if (!n) return invalid(path, "must be an integer in 0..255");
    m.value.*kField = static_cast<uint16_t>(*n);
    m.mask.*kField = 0xffff;
    return Ok{};
}

Status match_tcp_flags(const json& v, const std::string& path, const RuleContext&, MatchState& m) {
    Result<Masked> r = parse_flags(
        v, kTcpFlagNames, path, "must be flags like \"+syn-ack\" or a masked value \"0x02/0x12\"");
    if (!r) return r.error();
    m.value.tcp_flags = static_cast<uint8_t>(r->value);
    m.mask.tcp_flags = static_cast<uint8_t>(r->mask);
    return Ok{};
}

Status match_ct_state(const json& v, const std::string& path, const RuleContext&, MatchState& m) {
    Result<Masked> r =
        parse_flags(v, kCtStateNames, path,
                    "must be flags like \"+trk+est-new\" or a masked value \"0x22/0x23\"");
    if (!r) return r.error();
    m.value.ct_state = static_cast<uint8_t>(r->value);
    m.mask.ct_state = static_cast<uint8_t>(r->mask);
    return Ok{};
}

Status match_ct_zone(const json& v, const std::string& path, const RuleContext&, MatchState& m) {
    const std::optional<uint64_t> zone = json_uint(v, 0xffff);
    if (!zone) return invalid(path, "must be an integer in 0..65535");
    m.value.ct_zone = static_cast<uint16_t>(*zone);
    m.mask.ct_zone = 0xffff;
    return Ok{};
}

Status match_ct_mark(const json& v, const std::string& path, const RuleContext&, MatchState& m) {
    Result<Masked> r =
        parse_masked(v, 32, path, "must be 0..4294967295 or a masked value \"0x5/0xff\"");
    if (!r) return r.error();
    m.value.ct_mark = static_cast<uint32_t>(r->value);
    m.mask.ct_mark = static_cast<uint32_t>(r->mask);
    return Ok{};
}

struct MatchField {
    std::string_view key;
    FieldParser parse;
};

constexpr std::array<MatchField, 18> kMatchFields{{
    {"in_port", match_in_port},
    {"eth_src", match_mac<&FlowKey::eth_src>},
    {"eth_dst", match_mac<&FlowKey::eth_dst>},
    {"vlan", match_vlan},
    {"eth_type", match_eth_type},
    {"ip_src", match_ip<&FlowKey::ip_src, AF_INET>},
    {"ip_dst", match_ip<&FlowKey::ip_dst, AF_INET>},
    {"ipv6_src", match_ip<&FlowKey::ip_src, AF_INET6>},
    {"ipv6_dst", match_ip<&FlowKey::ip_dst, AF_INET6>},
    {"ip_proto", match_ip_proto},
    {"l4_src", match_l4_port<&MatchState::l4_src>},
    {"l4_dst", match_l4_port<&MatchState::l4_dst>},
    {"icmp_type", match_icmp<&FlowKey::l4_src>},
    {"icmp_code", match_icmp<&FlowKey::l4_dst>},
    {"tcp_flags", match_tcp_flags},
    {"ct_state", match_ct_state},
    {"ct_zone", match_ct_zone},
    {"ct_mark", match_ct_mark},
}};

/// Refuses fields whose prerequisite is missing or contradicted, so that no rule silently
/// matches nothing. The error names the dependent field.
Status check_prerequisites(const json& match, const MatchState& m, const std::string& path) {
    const char* ipv4_field = nullptr;
    for (const char* key : {"ip_src", "ip_dst"}) {
        if (!match.contains(key)) continue;
        if (ipv4_field == nullptr) ipv4_field = key;
        if (m.eth_type && *m.eth_type != kEtherTypeIpv4) {
            return invalid(at(path, key),
                           "requires eth_type ipv4 (0x0800), not " + hex16(*m.eth_type));
        }
    }
    bool ipv6 = false;
    for (const char* key : {"ipv6_src", "ipv6_dst"}) {
        if (!match.contains(key)) continue;
        ipv6 = true;
        if (ipv4_field != nullptr) {
            return invalid(at(path, key),
                           "cannot be combined with the IPv4 field " + std::string(ipv4_field));
        }
        if (m.eth_type && *m.eth_type != kEtherTypeIpv6) {
            return invalid(at(path, key),
                           "requires eth_type ipv6 (0x86dd), not " + hex16(*m.eth_type));
        }
    }
    const bool ip =
        ipv4_field != nullptr || ipv6 ||
        (m.eth_type && (*m.eth_type == kEtherTypeIpv4 || *m.eth_type == kEtherTypeIpv6));
    if (match.contains("ip_proto") && !ip) {
        return invalid(at(path, "ip_proto"),
                       "requires an IP match: ip_src, ip_dst, ipv6_src, ipv6_dst or eth_type "
                       "ipv4/ipv6");
    }
    const auto proto_is = [&](std::initializer_list<uint8_t> protos) {
        return m.ip_proto && std::find(protos.begin(), protos.end(), *m.ip_proto) != protos.end();
    };
    for (const char* key : {"l4_src", "l4_dst"}) {
        if (match.contains(key) && !proto_is({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP})) {
            return invalid(at(path, key), "requires ip_proto tcp, udp or sctp");
        }
    }
    for (const char* key : {"icmp_type", "icmp_code"}) {
        if (match.contains(key) && !proto_is({IPPROTO_ICMP, IPPROTO_ICMPV6})) {
            return invalid(at(path, key), "requires ip_proto icmp or icmpv6");
        }
    }
    if (match.contains("tcp_flags") && !proto_is({IPPROTO_TCP})) {
        return invalid(at(path, "tcp_flags"), "requires ip_proto tcp");
    }
    return Ok{};
}

/// Parses a match object (path names it) into m.
Status parse_match(const json& match, const RuleContext& ctx, const std::string& path,
                   MatchState& m) {
    if (!match.is_object()) return invalid(path, "must be an object");
    for (const auto& item : match.items()) {
        const std::string& key =
            item.key();  // not a structured binding: clang 14 cannot capture one
        const bool known = std::any_of(kMatchFields.begin(), kMatchFields.end(),
                                       [&](const MatchField& f) { return f.key == key; });
        if (!known) return invalid(at(path, key), "unknown key");
    }
    for (const MatchField& f : kMatchFields) {
        auto it = match.find(f.key);
        if (it == match.end()) continue;
        if (Status s = f.parse(*it, at(path, f.key), ctx, m); !s) return s;
    }
    if (Status s = check_prerequisites(match, m, path); !s) return s;
    const size_t n = std::max<size_t>(1, m.l4_src.size()) * std::max<size_t>(1, m.l4_dst.size());
    if (n > kMaxEntriesPerRule) {
        return invalid(path, "l4_src and l4_dst expand to " + std::to_string(m.l4_src.size()) +
                                 " x " + std::to_string(m.l4_dst.size()) + " = " +
                                 std::to_string(n) + " entries, more than " +
                                 std::to_string(kMaxEntriesPerRule));
    }
    return Ok{};
}

// ---------------------------------------------------------------------------------------------
// Actions.

enum class ArgKind : uint8_t { kNone, kPort, kVid, kMeter, kTable, kCtParams };

struct ActionSyntax {
    ActionType type;
    std::string_view name;
    ArgKind arg;
    std::string_view usage;
};

// Indexed by ActionType.
constexpr std::array<ActionSyntax, static_cast<size_t>(ActionType::kCount)> kActionSyntax{{
    {ActionType::kOutput, "output", ArgKind::kPort, "output:PORT"},
    {ActionType::kDrop, "drop", ArgKind::kNone, "drop"},
    {ActionType::kNormal, "normal", ArgKind::kNone, "normal"},
    {ActionType::kFlood, "flood", ArgKind::kNone, "flood"},
    {ActionType::kPushVlan, "push_vlan", ArgKind::kVid, "push_vlan:VID"},
    {ActionType::kPopVlan, "pop_vlan", ArgKind::kNone, "pop_vlan"},
    {ActionType::kSetVlan, "set_vlan", ArgKind::kVid, "set_vlan:VID"},
    {ActionType::kMirror, "mirror", ArgKind::kPort, "mirror:PORT"},
    {ActionType::kMeter, "meter", ArgKind::kMeter, "meter:ID"},
    {ActionType::kGotoTable, "goto_table", ArgKind::kTable, "goto_table:N"},
    {ActionType::kCt, "ct", ArgKind::kCtParams, "ct(zone=N,commit,nat(...),mark=N,table=N)"},
    {ActionType::kDpi, "dpi", ArgKind::kNone, "dpi"},
}};

constexpr bool action_syntax_in_enum_order() {
    for (size_t i = 0; i < kActionSyntax.size(); ++i) {
        if (static_cast<size_t>(kActionSyntax[i].type) != i) return false;
    }
    return true;
}
static_assert(action_syntax_in_enum_order(), "kActionSyntax rows must follow ActionType");

/// A table a rule in `table` may continue in: later than its own, below kMaxTables.
Result<uint8_t> parse_later_table(std::string_view text, uint8_t table, const std::string& path,
                                  std::string_view what) {
    const std::optional<uint64_t> n = parse_number(text, 0xffff);
    if (n && *n > table && *n < kMaxTables) return static_cast<uint8_t>(*n);
    if (table + 1 >= kMaxTables) {
        return invalid(path, std::string(what) + ": the rule is in the last table (" +
                                 std::to_string(table) + ")");
    }
    return invalid(path, std::string(what) + " must be a table in " + std::to_string(table + 1) +
                             ".." + std::to_string(kMaxTables - 1) + " (after the rule's table " +
                             std::to_string(table) + "), not " + in_quotes(text));
}

/// Parses the parameter list of "ct(...)" (inner: the text between the parentheses) into a,
/// and nat(...) / mark=N into the rule's NatSpec and ct_mark.
Status parse_ct(std::string_view inner, uint8_t table, const std::string& path, Action& a,
                CompiledRule& rule) {
    bool zone = false, commit = false, has_table = false, nat = false, mark = false;
    if (inner.empty()) return Ok{};  // "ct" and "ct()": zone 0, no commit, no table
    for (size_t begin = 0;;) {
        // The next comma outside parentheses ends the parameter (nat(...) holds commas).
        size_t end = begin;
        int depth = 0;
        for (; end < inner.size() && (depth > 0 || inner[end] != ','); ++end) {
            if (inner[end] == '(') ++depth;
            if (inner[end] == ')' && --depth < 0) break;
        }
        if (depth != 0) return invalid(path, "unbalanced parentheses in ct(...)");
        const std::string_view param = inner.substr(begin, end - begin);
        const size_t eq = param.find('=');
        const std::string_view name = param.substr(0, eq);
        const std::string_view value =
            eq == std::string_view::npos ? std::string_view() : param.substr(eq + 1);
        const auto once = [&](bool& seen) {
            const bool dup = seen;
            seen = true;
            return dup ? Status(invalid(path, "ct parameter " + std::string(name) + " given twice"))
                       : Status(Ok{});
        };
        if (param == "commit") {
            if (Status s = once(commit); !s) return s;
            a.arg32 |= kCtCommit;
        } else if (name == "zone" && eq != std::string_view::npos) {
            if (Status s = once(zone); !s) return s;
            const std::optional<uint64_t> z = parse_number(value, 0xffff);
            if (!z) return invalid(path, "ct zone must be 0..65535, not " + in_quotes(value));
            a.arg16 = static_cast<uint16_t>(*z);
        } else if (name == "table" && eq != std::string_view::npos) {
            if (Status s = once(has_table); !s) return s;
            Result<uint8_t> t = parse_later_table(value, table, path, "ct table");
            if (!t) return t.error();
            a.arg32 |= kCtHasTable | (uint32_t{*t} << kCtTableShift);
        } else if (name == "mark" && eq != std::string_view::npos) {
            if (Status s = once(mark); !s) return s;
            const std::optional<uint64_t> v = parse_number(value, 0xffffffffu);
            if (!v) return invalid(path, "ct mark must be 0..4294967295, not " + in_quotes(value));
            a.arg32 |= kCtSetMark;
            rule.ct_mark = static_cast<uint32_t>(*v);
        } else if (param == "nat" || param.starts_with("nat(")) {
            if (Status s = once(nat); !s) return s;
            std::string_view args;
            if (param != "nat") {
                if (!param.ends_with(")"))
                    return invalid(path, "unbalanced parentheses in nat(...)");
                args = param.substr(4, param.size() - 5);
            }
            Result<NatSpec> spec = parse_nat_spec(args, path);
            if (!spec) return spec.error();
            a.arg32 |= kCtNat;
            rule.nat = *spec;
        } else if (param.empty()) {
            return invalid(path, "empty ct parameter");
        } else {
            return invalid(path, "unknown ct parameter " + in_quotes(param) +
                                     " (expected zone=N, commit, nat[(...)], mark=N, table=N)");
        }
        if (end >= inner.size()) break;
        begin = end + 1;
    }
    if (mark && !commit) return invalid(path, "ct mark=N needs commit");
    if (nat && rule.nat.kind != NatSpec::kNone && !commit)
        return invalid(path, "nat(src=...) / nat(dst=...) needs commit: it binds new connections");
    return Ok{};
}

/// Parses one action string of a rule in `table`. @return the action, kInvalidParams, or
/// kNotFound for an unknown port or meter.
Result<Action> parse_action(const json& v, const RuleContext& ctx, uint8_t table,
                            const std::string& path, CompiledRule& rule) {
    if (!v.is_string()) return invalid(path, "must be a string like \"output:vm1\"");
    const std::string_view s = v.get_ref<const std::string&>();
    std::string_view name = s;
    std::optional<std::string_view> arg;
    if (s == "ct" || s.starts_with("ct(")) {
        name = "ct";
        if (s != "ct") {
            if (!s.ends_with(")")) return invalid(path, "unbalanced parentheses in ct(...)");
            arg = s.substr(3, s.size() - 4);
        }
    } else if (const size_t colon = s.find(':'); colon != std::string_view::npos) {
        name = s.substr(0, colon);
        arg = s.substr(colon + 1);
    }
    const auto syntax = std::find_if(kActionSyntax.begin(), kActionSyntax.end(),
                                     [&](const ActionSyntax& a) { return a.name == name; });
    if (syntax == kActionSyntax.end()) return invalid(path, "unknown action " + in_quotes(name));
    Action a{.type = syntax->type, .flags = 0, .arg16 = 0, .arg32 = 0};
    if (syntax->arg == ArgKind::kNone) {
        if (arg) return invalid(path, std::string(name) + " takes no argument");
        return a;
    }
    if (syntax->arg == ArgKind::kCtParams) {
        if (s.starts_with("ct:"))
            return invalid(path,
                           "ct takes parameters in parentheses: " + std::string(syntax->usage));
        if (Status st = parse_ct(arg.value_or(""), table, path, a, rule); !st) return st.error();
        return a;
    }
    if (!arg || arg->empty()) {
        return invalid(path,
                       std::string(name) + " needs an argument: " + std::string(syntax->usage));
    }
    switch (syntax->arg) {
        case ArgKind::kPort: {
            const std::optional<uint16_t> slot = resolve_port(ctx, std::string(*arg));
            if (!slot) return not_found(path, "no port named " + std::string(*arg));
            a.arg16 = *slot;
            break;
        }
        case ArgKind::kVid: {
            const std::optional<uint64_t> vid = parse_number(*arg, kMaxPushVid);
            if (!vid) return invalid(path, "VLAN id must be 0..4094, not " + in_quotes(*arg));
            a.arg16 = static_cast<uint16_t>(*vid);
            break;
        }
        case ArgKind::kMeter: {
            const std::optional<uint64_t> id =
                parse_number(*arg, std::numeric_limits<uint32_t>::max());
            if (!id) return invalid(path, "meter id must be 0..4294967295, not " + in_quotes(*arg));
            a.arg32 = static_cast<uint32_t>(*id);
            if (!ctx.meter_exists || !ctx.meter_exists(a.arg32)) {
                return not_found(path, "no meter " + std::to_string(a.arg32));
            }
            break;
        }
        case ArgKind::kTable: {
            Result<uint8_t> t = parse_later_table(*arg, table, path, "goto_table");
            if (!t) return t.error();
            a.arg16 = *t;
            break;
        }
        case ArgKind::kNone:
        case ArgKind::kCtParams:
            break;  // handled above
    }
    return a;
}

/// Parses the actions array into rule.actions / n_actions, checking their order.
Status parse_actions(const json& actions, const RuleContext& ctx, uint8_t table,
                     const std::string& path, CompiledRule& rule) {
    if (!actions.is_array()) return invalid(path, "must be a non-empty array of action strings");
    if (actions.empty()) return invalid(path, "must not be empty");
    if (actions.size() > kMaxActions) {
        return invalid(path, "must have at most " + std::to_string(kMaxActions) + " actions, has " +
                                 std::to_string(actions.size()));
    }
    bool ct_seen = false;
    for (size_t i = 0; i < actions.size(); ++i) {
        Result<Action> a = parse_action(actions[i], ctx, table, at(path, i), rule);
        if (!a) return a.error();
        if (a->type == ActionType::kCt) {
            if (ct_seen) return invalid(at(path, i), "a rule has at most one ct action");
            ct_seen = true;
            if ((a->arg32 & kCtHasTable) && i + 1 != actions.size())
                return invalid(at(path, i), "ct(table=N) must be the last action");
        }
        if (a->type == ActionType::kDrop && actions.size() > 1) {
            return invalid(at(path, i), "drop must be the only action");
        }
        if (a->type == ActionType::kGotoTable && i + 1 != actions.size()) {
            return invalid(at(path, i), "goto_table must be the last action");
        }
        rule.actions[i] = *a;
    }
    // normal and flood hand the packet over for good: nothing after them could run. Checked
    // after every action parsed, so a malformed action is reported first.
    for (size_t i = 0; i + 1 < actions.size(); ++i) {
        ActionType t = rule.actions[i].type;
        if (t == ActionType::kNormal || t == ActionType::kFlood)
            return invalid(at(path, i), std::string(t == ActionType::kNormal ? "normal" : "flood") +
                                            " must be the last action");
    }
    rule.n_actions = static_cast<uint8_t>(actions.size());
    mark_output_copies(rule);
    return Ok{};
}

constexpr std::array<std::string_view, 5> kRuleKeys{"id", "table", "priority", "match", "actions"};

}  // namespace

Result<RuleSpec> parse_rule(const json& rule, const RuleContext& ctx, const std::string& path) {
    if (!rule.is_object()) return invalid(path, "must be an object");
    for (const auto& item : rule.items()) {
        if (std::find(kRuleKeys.begin(), kRuleKeys.end(), item.key()) == kRuleKeys.end()) {
            return invalid(at(path, item.key()), "unknown key");
        }
    }
    RuleSpec spec;
    auto it = rule.find("id");
    if (it == rule.end()) return invalid(at(path, "id"), "required");
    const std::optional<uint64_t> id = json_uint(*it, std::numeric_limits<uint64_t>::max());
    if (!id) return invalid(at(path, "id"), "must be an unsigned 64-bit integer");
    spec.id = *id;
    if (it = rule.find("table"); it != rule.end()) {
        const std::optional<uint64_t> table = json_uint(*it, kMaxTables - 1);
        if (!table) {
            return invalid(at(path, "table"),
                           "must be an integer in 0.." + std::to_string(kMaxTables - 1));
        }
        spec.table = static_cast<uint8_t>(*table);
    }
    if (it = rule.find("priority"); it != rule.end()) {
        const std::optional<int32_t> priority = json_int32(*it);
        if (!priority) {
            return invalid(at(path, "priority"), "must be an integer in -2147483648..2147483647");
        }
        spec.priority = *priority;
    }
    const json empty_match = json::object();
    it = rule.find("match");
    const json& match = it != rule.end() ? *it : empty_match;
    MatchState m;
    if (Status s = parse_match(match, ctx, at(path, "match"), m); !s) return s.error();

    CompiledRule base{};
    base.priority = spec.priority;
    base.table = spec.table;
    it = rule.find("actions");
    if (it == rule.end()) return invalid(at(path, "actions"), "required");
    if (Status s = parse_actions(*it, ctx, spec.table, at(path, "actions"), base); !s) {
        return s.error();
    }

    // One entry per (l4_src prefix, l4_dst prefix) pair; a side not given contributes one
    // entry that leaves the key as the other fields set it.
    const std::vector<PortMask> any{{0, 0}};
    const std::vector<PortMask>& srcs = m.l4_src.empty() ? any : m.l4_src;
    const std::vector<PortMask>& dsts = m.l4_dst.empty() ? any : m.l4_dst;
    for (const PortMask& src : srcs) {
        for (const PortMask& dst : dsts) {
            CompiledRule e = base;
            e.value = m.value;
            e.mask = m.mask;
            if (!m.l4_src.empty()) std::tie(e.value.l4_src, e.mask.l4_src) = src;
            if (!m.l4_dst.empty()) std::tie(e.value.l4_dst, e.mask.l4_dst) = dst;
            // The classifier relies on value == value & mask; the parsers already ensure it.
            auto* value = reinterpret_cast<uint8_t*>(&e.value);
            const auto* mask = reinterpret_cast<const uint8_t*>(&e.mask);
            for (size_t b = 0; b < sizeof(FlowKey); ++b) value[b] &= mask[b];
            spec.entries.push_back(e);
        }
    }
    spec.source = {{"id", spec.id},
                   {"table", spec.table},
                   {"priority", spec.priority},
                   {"match", match},
                   {"actions", *it}};
    return spec;
}

std::vector<std::pair<uint16_t, uint16_t>> port_range_to_masks(uint16_t lo, uint16_t hi) {
    std::vector<std::pair<uint16_t, uint16_t>> out;
    if (lo > hi) return out;
    // Greedy from the bottom: the largest aligned block starting at `start` that ends within
    // the range. The blocks are the maximal prefixes inside the range, which is the minimal cover.
    uint32_t start = lo;
    const uint32_t end = uint32_t{hi} + 1;  // exclusive
    while (start < end) {
        uint32_t size = start == 0 ? 0x10000u : uint32_t{1} << std::countr_zero(start);
        while (start + size > end) size >>= 1;
        out.emplace_back(static_cast<uint16_t>(start), static_cast<uint16_t>(~(size - 1)));
        start += size;
    }
    return out;
}

Status check_config_rules(const Config& cfg) {
    RuleContext ctx;
    ctx.port_slot = [&cfg](const std::string& name) -> std::optional<uint16_t> {
        for (size_t i = 0; i < cfg.ports.size(); ++i)
            if (cfg.ports[i].name == name) return static_cast<uint16_t>(i);
        return std::nullopt;
    };
    ctx.meter_exists = [&cfg](uint32_t id) {
        return std::any_of(cfg.meters.begin(), cfg.meters.end(),
                           [id](const MeterConfig& m) { return m.id == id; });
    };
    std::vector<uint64_t> ids;
    for (size_t i = 0; i < cfg.rules.size(); ++i) {
        const std::string path = at("rules", i);
        Result<RuleSpec> r = parse_rule(cfg.rules[i], ctx, path);
        if (!r) return r.error();
        if (std::find(ids.begin(), ids.end(), r->id) != ids.end())
            return make_error(ErrorCode::kConflict, path + ".id: a rule with id " +
                                                        std::to_string(r->id) + " already exists");
        ids.push_back(r->id);
    }
    return Ok{};
}

}  // namespace ferry
