// IP protocol numbers are <netinet/in.h>'s IPPROTO_*; this header adds the ICMP types several parts
// of the fast path name.
#pragma once

#include <netinet/in.h>

#include <cstdint>

namespace ferry {

// Typed names of a few IPPROTO_* values, still used by migrate/ and its tests; new code names
// IPPROTO_* directly. Defined from <netinet/in.h>, not as numbers of their own.
inline constexpr uint8_t kProtoIcmp = IPPROTO_ICMP;
inline constexpr uint8_t kProtoTcp = IPPROTO_TCP;
inline constexpr uint8_t kProtoUdp = IPPROTO_UDP;
inline constexpr uint8_t kProtoIcmpv6 = IPPROTO_ICMPV6;

/// IPPROTO_ICMP for IP version 4, IPPROTO_ICMPV6 otherwise (<netinet/in.h> puts the two in
/// different enums, so a plain conditional between them mixes types). Context: any.
constexpr uint8_t icmp_proto_of(uint8_t ip_version) {
    return ip_version == 4 ? uint8_t{IPPROTO_ICMP} : uint8_t{IPPROTO_ICMPV6};
}

inline constexpr uint8_t kIcmpEchoReply = 0;
inline constexpr uint8_t kIcmpEchoRequest = 8;
inline constexpr uint8_t kIcmpv6EchoRequest = 128;
inline constexpr uint8_t kIcmpv6EchoReply = 129;

}  // namespace ferry
