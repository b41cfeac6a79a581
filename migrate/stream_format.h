// The constants of the migration stream, version 2 (docs/migration-stream.md): magic, versions,
// section types, limits, and the tables that map ferryd's internal enums and flags to their
// stable wire values. Context: any.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "dataplane/conntrack/ct_entry.h"
#include "dataplane/conntrack/ct_tcp.h"

namespace ferry {

inline constexpr std::array<uint8_t, 8> kStreamMagic = {0x89, 'F', 'E', 'R', 'R', 'Y', '\r', '\n'};
inline constexpr std::array<uint8_t, 8> kAnswerCommit = {0x89, 'F', 'E', 'R', 'R', 'Y', 'O', 'K'};
inline constexpr std::array<uint8_t, 8> kAnswerRefuse = {0x89, 'F', 'E', 'R', 'R', 'Y', 'N', 'O'};
inline constexpr std::array<uint8_t, 8> kAnswerReady = {0x89, 'F', 'E', 'R', 'R', 'Y', 'G', 'O'};

inline constexpr uint16_t kStreamVersion = 2;          // what this ferryd writes and reads up to
inline constexpr uint16_t kStreamCompatibleSince = 2;  // the oldest reader of what it writes

enum class StreamScope : uint16_t { kSwitch = 0, kPort = 1 };

enum class SectionType : uint16_t {
    kPort = 0x0001,
    kMacs = 0x0002,
    kConnections = 0x0003,
    kConnectionsGone = 0x0004,
    kDpiStreams = 0x0005,
    kRules = 0x0006,
    kCounters = 0x0007,
    kPrecopyEnd = 0x0008,
    kConnectionsIpv4 = 0x0009,  // version 2
    kTrailer = 0x00ff,
};
inline constexpr uint16_t kSectionCritical = 0x0001;

// Limits a reader enforces before allocating (docs/migration-stream.md, "Limits").
inline constexpr size_t kSectionHeaderBytes = 12;
inline constexpr uint32_t kMaxSectionBytes = 64u << 20;
inline constexpr size_t kMaxStreamBytes = size_t{4} << 30;  // a whole stream, at most
inline constexpr size_t kMaxStreamPorts = 64;
inline constexpr uint32_t kMaxConnectionsPerSection = 1u << 24;
inline constexpr uint32_t kMaxMacs = 1u << 20;
inline constexpr uint16_t kMaxPortAddresses = 256;
inline constexpr uint32_t kMaxDpiStreamBytes = 64u << 10;
inline constexpr size_t kMaxVersionText = 64;
inline constexpr size_t kMaxPortName = 31;
inline constexpr uint16_t kNoStreamPort = 0xffff;
inline constexpr size_t kConnectionWireBytes = 208;      // a CONNECTIONS entry
inline constexpr size_t kConnectionIpv4WireBytes = 120;  // a CONNECTIONS_IPV4 entry
inline constexpr size_t kTupleWireBytes = 40;
/// A connection's share of a target's stream bound (stream_limits_for_room): a CONNECTIONS
/// entry and a DPI_STREAMS entry of 1 KiB per direction, twice (pre-copy and delta), and a gone
/// tuple.
inline constexpr size_t kStreamBytesPerConnection =
    2 * (kConnectionWireBytes + 4 + 2 * (13 + 1024)) + kTupleWireBytes;

// Port address flags.
inline constexpr uint16_t kAddrConfigured = 0x0001;
inline constexpr uint16_t kAddrLearned = 0x0002;
inline constexpr uint16_t kAddrLinkLocal = 0x0004;

/// TCP states on the wire, indexed by TcpState (kNone is never sent: an entry has a state).
inline constexpr std::array<uint8_t, static_cast<size_t>(TcpState::kCount)> kTcpStateWire = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09};
inline constexpr uint8_t kOtherFirstWire = 0x80;
inline constexpr uint8_t kOtherMultipleWire = 0x81;

/// One flag's internal bit and wire bit.
struct WireFlag {
    uint32_t internal;
    uint32_t wire;
};

/// Connection flags that travel; kCtfForeignReply and kCtfRedirect are the source's placement,
/// which the target works out for itself.
inline constexpr std::array<WireFlag, 6> kConnFlagWire = {{
    {kCtfSrcNat, 0x0001},
    {kCtfDstNat, 0x0002},
    {kCtfLiberal, 0x0004},
    {kCtfSeenReply, 0x0008},
    {kCtfAssured, 0x0010},
    {kCtfBlocked, 0x0020},
}};

inline constexpr std::array<WireFlag, 4> kTcpPeerFlagWire = {{
    {kTcpPeerWindowScale, 0x01},
    {kTcpPeerSackPerm, 0x02},
    {kTcpPeerCloseInit, 0x04},
    {kTcpPeerMaxAckSet, 0x08},
}};

/// Maps flags through a table. @return false when `from` has a bit the table does not know
template <size_t N>
bool map_flags(const std::array<WireFlag, N>& table, uint32_t from, bool to_wire, uint32_t* to) {
    uint32_t out = 0, known = 0;
    for (const WireFlag& f : table) {
        const uint32_t src = to_wire ? f.internal : f.wire;
        known |= src;
        if (from & src) out |= to_wire ? f.wire : f.internal;
    }
    *to = out;
    return (from & ~known) == 0;
}

}  // namespace ferry
