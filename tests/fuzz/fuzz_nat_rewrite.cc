// libFuzzer target for the NAT rewriting functions: any byte string is a frame, and its first 36
// bytes also choose the translation target. Besides the sanitizers' checks (nothing read or
// written outside the frame) it traps when a refused rewrite changed a byte, when a rewrite
// touched bytes outside the IP packet, when the rewritten packet does not carry its target, or
// when a checksum that was valid before a rewrite no longer is (checked by full recomputation, so
// seeds with valid checksums exercise the incremental arithmetic). Run through scripts/fuzz.
#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/conntrack/nat_rewrite.h"
#include "dataplane/packet_parse.h"
#include "tests/fuzz/frame_checks.h"

namespace {

using namespace ferry::fuzz;
using ferry::icmp_proto_of;
using ferry::load_be16;

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
    if (layout.l4_offset != 0 && (key.ip_proto == IPPROTO_TCP || key.ip_proto == IPPROTO_UDP)) {
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
        check(tuple.proto == IPPROTO_TCP || tuple.proto == IPPROTO_UDP ||
              tuple.proto == icmp_proto_of(key.ip_version));
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
    const bool echo = after.proto == IPPROTO_ICMP || after.proto == IPPROTO_ICMPV6;
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
