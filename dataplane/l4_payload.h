// Where a parsed packet's IP packet ends and its transport payload lies. Shared by connection
// tracking (TCP segments) and payload inspection. Context: fast path.
#pragma once

#include <cstdint>

#include "dataplane/byte_order.h"
#include "dataplane/flow_key.h"
#include "dataplane/ip_proto.h"

namespace ferry {

/// One past the last byte of the IP packet (Ethernet padding excluded), or 0 if the frame is
/// shorter than the IP header says. The parser accepted the frame, so the header is there.
inline uint32_t ip_end(const uint8_t* frame, uint32_t len, const PacketLayout& l,
                       const FlowKey& k) {
    const uint32_t l3 = l.l3_offset;
    uint32_t end;
    if (k.ip_version == 4) {
        if (l3 + 20 > len) return 0;
        end = l3 + load_be16(frame + l3 + 2);
    } else {
        if (l3 + 40 > len) return 0;
        end = l3 + 40 + load_be16(frame + l3 + 4);
    }
    return end <= len ? end : 0;
}

/// The application payload of a TCP or UDP packet: [*offset, *offset + *length) of the frame.
/// @return false when the packet is neither, is a later fragment, or its headers do not fit
inline bool l4_payload(const uint8_t* frame, uint32_t len, const PacketLayout& l, const FlowKey& k,
                       uint32_t* offset, uint32_t* length) {
    const uint32_t end = ip_end(frame, len, l, k);
    const uint32_t l4 = l.l4_offset;
    if (l4 == 0 || end <= l4) return false;
    uint32_t hdr;
    if (k.ip_proto == IPPROTO_TCP) {
        if (end - l4 < 20) return false;
        hdr = static_cast<uint32_t>(frame[l4 + 12] >> 4) * 4;
        if (hdr < 20) return false;
    } else if (k.ip_proto == IPPROTO_UDP) {
        hdr = 8;
    } else {
        return false;
    }
    if (end - l4 < hdr) return false;
    *offset = l4 + hdr;
    *length = end - l4 - hdr;
    return true;
}

}  // namespace ferry
