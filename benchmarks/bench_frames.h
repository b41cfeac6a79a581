// Frames for the conntrack and payload-inspection micro-benchmarks: an Ethernet + IPv4 + TCP
// header of a tuple's direction, written in place. Context: benchmark setup.
#pragma once

#include <cstdint>
#include <cstring>

#include "dataplane/byte_order.h"
#include "dataplane/conntrack/ct_tuple.h"

namespace ferry::bench {

/// Writes Ethernet, IPv4 (checksum right; DF set when dont_fragment) and a TCP header of
/// tcp_words 32-bit words (options zeroed; the TCP checksum 0, which neither ct nor dpi
/// verifies) for a packet of t's direction carrying payload_len bytes.
/// @return the TCP header, for options
inline uint8_t* write_tcp_headers(uint8_t* out, const CtTuple& t, uint32_t seq, uint32_t ack,
                                  uint8_t flags, unsigned tcp_words, uint32_t payload_len,
                                  bool dont_fragment) {
    const uint32_t headers = 14 + 20 + 4 * tcp_words;
    std::memset(out, 0, headers);
    const uint8_t macs[12] = {0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01};
    std::memcpy(out, macs, sizeof(macs));
    store_be16(out + 12, 0x0800);
    uint8_t* ip = out + 14;
    ip[0] = 0x45;
    store_be16(ip + 2, static_cast<uint16_t>(headers - 14 + payload_len));
    if (dont_fragment) ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    std::memcpy(ip + 12, t.src, 4);
    std::memcpy(ip + 16, t.dst, 4);
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2) sum += static_cast<uint32_t>(ip[i] << 8 | ip[i + 1]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    store_be16(ip + 10, static_cast<uint16_t>(~sum));
    uint8_t* tcp = ip + 20;
    store_be16(tcp, t.sport);
    store_be16(tcp + 2, t.dport);
    store_be32(tcp + 4, seq);
    store_be32(tcp + 8, ack);
    tcp[12] = static_cast<uint8_t>(tcp_words << 4);
    tcp[13] = flags;
    store_be16(tcp + 14, 0xffff);
    return tcp;
}

}  // namespace ferry::bench
