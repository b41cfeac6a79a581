// libFuzzer target for the NAT rewriting functions: any byte string is a frame, and its first 36
// bytes also choose the translation target. Besides the sanitizers' checks (nothing read or
// written outside the frame) it traps when a refused rewrite changed a byte, when a rewrite
// touched bytes outside the IP packet, when the rewritten packet does not carry its target, or
// when a checksum that was valid before a rewrite no longer is (checked by full recomputation, so
// seeds with valid checksums exercise the incremental arithmetic). Run through scripts/fuzz.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/conntrack/nat_rewrite.h"
#include "dataplane/packet_parse.h"

namespace {

constexpr uint8_t kProtoIcmp = 1;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoIcmpv6 = 58;

/// Aborts the run so libFuzzer records the input as a crash. Context: fuzzer only.
void check(bool ok) {
    if (!ok) __builtin_trap();
}

uint16_t load_be16(const uint8_t* p) {
    return static_cast<uint16_t>(p[0] << 8 | p[1]);
}

/// One's-complement sum of n bytes (odd last byte padded with zero), not folded.
uint64_t sum_bytes(const uint8_t* p, size_t n, uint64_t acc = 0) {
    for (size_t i = 0; i + 1 < n; i += 2) acc += load_be16(p + i);
    if (n % 2 != 0) acc += static_cast<uint64_t>(p[n - 1]) << 8;
    return acc;
}

/// A checksummed region (checksum field included) verifies when its sum is a one's-complement
/// zero. Either zero form counts: the incremental update preserves the value modulo 0xffff.
bool sums_to_zero(uint64_t s) {
    return s % 0xffff == 0;
}

/// Sum of the pseudo-header of a transport message of n bytes (none for ICMPv4).
uint64_t pseudo_sum(const uint8_t* ip, uint8_t version, uint8_t proto, size_t n) {
    if (proto == kProtoIcmp) return 0;
    const size_t alen = version == 4 ? 4 : 16;
    const uint8_t* src = ip + (version == 4 ? 12 : 8);
    uint64_t s = sum_bytes(src, 2 * alen);  // destination follows the source in both versions
    return s + proto + (n >> 16) + (n & 0xffff);
}

/// End of the IP packet the parser accepted (its lengths were checked against the frame).
size_t ip_end(const uint8_t* frame, const ferry::FlowKey& key, const ferry::PacketLayout& l) {
    const uint8_t* ip = frame + l.l3_offset;
    return key.ip_version == 4 ? l.l3_offset + load_be16(ip + 2)
                               : l.l3_offset + 40 + load_be16(ip + 4);
}

/// Which checksums of a parsed frame verify by full recomputation. A checksum that cannot be
/// recomputed from this frame alone (fragments, IPv6 extension headers, a zero UDP checksum, an
/// unknown protocol) counts as not valid, so it is not checked afterwards.
struct Validity {
    bool ip_header = false;
    bool l4 = false;
    bool udp_nonzero = false;
};

Validity validity(const uint8_t* frame, const ferry::FlowKey& key, const ferry::PacketLayout& l) {
    Validity v;
    const uint8_t* ip = frame + l.l3_offset;
    if (key.ip_version == 4) v.ip_header = sums_to_zero(sum_bytes(ip, (ip[0] & 0x0fu) * 4u));
    const uint8_t proto = key.ip_proto;
    if (l.l4_offset == 0) return v;
    const size_t n = ip_end(frame, key, l) - l.l4_offset;
    const uint8_t* l4 = frame + l.l4_offset;
    if (proto == kProtoUdp) v.udp_nonzero = load_be16(l4 + 6) != 0;
    const bool whole = key.ip_version == 4 ? (load_be16(ip + 6) & 0x3fffu) == 0 : ip[6] == proto;
    const bool known = proto == kProtoTcp || (proto == kProtoUdp && v.udp_nonzero) ||
                       (proto == kProtoIcmp && key.ip_version == 4) ||
                       (proto == kProtoIcmpv6 && key.ip_version == 6);
    if (whole && known) {
        v.l4 = sums_to_zero(pseudo_sum(ip, key.ip_version, proto, n) + sum_bytes(l4, n));
    }
    return v;
}

/// Checks that a rewrite that succeeded left the frame parseable with the same layout, touched
/// nothing outside the IP packet, and kept every checksum that was valid before valid.
void check_rewritten(const uint8_t* before, const std::vector<uint8_t>& after,
                     const ferry::FlowKey& key, const ferry::PacketLayout& layout,
                     ferry::FlowKey* new_key) {
    const auto len = static_cast<uint32_t>(after.size());
    ferry::PacketLayout new_layout;
    check(!ferry::parse_frame(after.data(), len, 7, new_key, &new_layout));
    check(new_layout.l3_offset == layout.l3_offset && new_layout.l4_offset == layout.l4_offset);
    check(new_key->ip_version == key.ip_version && new_key->ip_proto == key.ip_proto);
    const size_t end = ip_end(before, key, layout);
    check(std::memcmp(after.data(), before, layout.l3_offset) == 0);
    check(std::memcmp(after.data() + end, before + end, after.size() - end) == 0);
    const Validity was = validity(before, key, layout);
    const Validity now = validity(after.data(), *new_key, layout);
    check(!was.ip_header || now.ip_header);
    check(!was.l4 || now.l4);
    check(was.udp_nonzero == now.udp_nonzero);  // a zero UDP checksum stays zero, and only it
}

/// nat_rewrite on a copy: refused -> unchanged; done -> carries `to`, checksums still valid.
void fuzz_nat_rewrite(const uint8_t* data, uint32_t len, const ferry::FlowKey& key,
                      const ferry::PacketLayout& layout, const ferry::NatTarget& to) {
    std::vector<uint8_t> buf(data, data + len);
    if (!ferry::nat_rewrite(buf.data(), len, layout, key, to)) {
        check(std::memcmp(buf.data(), data, len) == 0);
        return;
    }
    ferry::FlowKey now;
    check_rewritten(data, buf, key, layout, &now);
    const size_t alen = key.ip_version == 4 ? 4 : 16;
    check(std::memcmp(now.ip_src, to.src, alen) == 0 && std::memcmp(now.ip_dst, to.dst, alen) == 0);
    if (layout.l4_offset != 0 && (key.ip_proto == kProtoTcp || key.ip_proto == kProtoUdp)) {
        check(now.l4_src == to.sport && now.l4_dst == to.dport);
    }
}

/// The ICMP error functions: both must recognise the same packets; a rewritten error must quote
/// exactly `inner` and keep its ICMP, outer and quoted header checksums valid.
void fuzz_icmp_error(const uint8_t* data, uint32_t len, const ferry::FlowKey& key,
                     const ferry::PacketLayout& layout, const ferry::NatTarget& inner) {
    ferry::CtTuple tuple;
    const bool is_error = ferry::icmp_error_inner_tuple(data, len, layout, key, 3, &tuple);
    if (!is_error) {
        const ferry::CtTuple zero{};
        check(tuple == zero);
    } else {
        check(tuple.ip_version == key.ip_version && tuple.zone == 3);
        check(tuple.proto == kProtoTcp || tuple.proto == kProtoUdp ||
              tuple.proto == (key.ip_version == 4 ? kProtoIcmp : kProtoIcmpv6));
    }

    std::vector<uint8_t> buf(data, data + len);
    const uint8_t* outer_dst = inner.src;  // any address will do; the source keeps it distinct
    const bool done = ferry::nat_rewrite_icmp_error(buf.data(), len, layout, key, outer_dst, inner);
    check(done == is_error);
    if (!done) {
        check(std::memcmp(buf.data(), data, len) == 0);
        return;
    }
    ferry::FlowKey now;
    check_rewritten(data, buf, key, layout, &now);
    const size_t alen = key.ip_version == 4 ? 4 : 16;
    check(std::memcmp(now.ip_dst, outer_dst, alen) == 0);

    // The quoted IPv4 header checksum, when the whole quoted header is there.
    if (key.ip_version == 4) {
        const size_t quoted = layout.l4_offset + 8u;
        const size_t header_len = (data[quoted] & 0x0fu) * 4u;
        if (quoted + header_len <= ip_end(data, key, layout)) {
            const bool was = sums_to_zero(sum_bytes(data + quoted, header_len));
            check(!was || sums_to_zero(sum_bytes(buf.data() + quoted, header_len)));
        }
    }

    ferry::CtTuple after;
    check(ferry::icmp_error_inner_tuple(buf.data(), len, layout, key, 3, &after));
    check(std::memcmp(after.src, inner.src, alen) == 0);
    check(std::memcmp(after.dst, inner.dst, alen) == 0);
    const bool echo = after.proto == kProtoIcmp || after.proto == kProtoIcmpv6;
    check(after.sport == inner.sport && after.dport == (echo ? inner.sport : inner.dport));
}

}  // namespace

// The name is libFuzzer's entry point, not ours to choose.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size > UINT16_MAX) return -1;  // larger than any frame; keeps offsets meaningful
    const auto len = static_cast<uint32_t>(size);
    ferry::FlowKey key;
    ferry::PacketLayout layout;
    if (ferry::parse_frame(data, len, 7, &key, &layout) || key.ip_version == 0) return 0;

    // The target comes from the input itself so the fuzzer controls it too. For IPv4 only the
    // first 4 bytes of each address count.
    uint8_t head[36] = {};
    std::memcpy(head, data, size < sizeof(head) ? size : sizeof(head));
    ferry::NatTarget to;
    std::memcpy(to.src, head, 16);
    std::memcpy(to.dst, head + 16, 16);
    to.sport = load_be16(head + 32);
    to.dport = load_be16(head + 34);

    fuzz_nat_rewrite(data, len, key, layout, to);
    fuzz_icmp_error(data, len, key, layout, to);
    return 0;
}
