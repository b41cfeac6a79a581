// libFuzzer target for read_stream (the migration stream's reader): any byte string is a
// candidate stream. Each input is read twice: as it is (which mostly exercises the header and the
// CRC checks), and "repaired", with its header CRC, every section's CRC and the trailer's counts
// recomputed, so that mutations inside payloads reach the section decoders instead of stopping at
// a CRC. A refusal must be kInvalidParams with the documented message shape. A stream that reads
// must satisfy what the reader promises (ports numbered within the stream, connections and DPI
// entries referring to what exists, limits kept), and writing it back must give a stream that
// reads again to the same state: write(read(write(read(x)))) == write(read(x)), byte for byte.
// Run through scripts/fuzz.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "dataplane/ip_proto.h"
#include "migrate/crc32c.h"
#include "migrate/stream_codec.h"
#include "migrate/stream_format.h"
#include "migrate/stream_reader.h"
#include "migrate/stream_writer.h"

namespace {

using ferry::MigrationState;

/// Aborts the run so libFuzzer records the input as a crash. Context: fuzzer only.
void check(bool ok) {
    if (!ok) __builtin_trap();
}

uint32_t get32(const std::vector<uint8_t>& b, size_t at) {
    return uint32_t{b[at]} << 24 | uint32_t{b[at + 1]} << 16 | uint32_t{b[at + 2]} << 8 | b[at + 3];
}

void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

void put64(std::vector<uint8_t>& b, size_t at, uint64_t v) {
    put32(b, at, static_cast<uint32_t>(v >> 32));
    put32(b, at + 4, static_cast<uint32_t>(v));
}

/// The input with what a mutation breaks recomputed: the header CRC, each section's CRC, and
/// the trailer's counts (from the sections' own count fields) and byte offset. Anything that
/// does not have the shape of a stream is left as it is.
std::vector<uint8_t> repaired(const uint8_t* data, size_t n) {
    std::vector<uint8_t> s(data, data + n);
    if (n < 14) return s;
    const size_t header_length = size_t{s[12]} << 8 | s[13];
    if (header_length < 30 || header_length > n) return s;
    put32(s, header_length - 4, ferry::crc32c(s.data(), header_length - 4));
    uint32_t counts[6] = {};  // sections, ports, macs, connections, gone, dpi
    for (size_t at = header_length; n - at >= ferry::kSectionHeaderBytes;) {
        const uint16_t type = static_cast<uint16_t>(s[at] << 8 | s[at + 1]);
        const uint32_t length = get32(s, at + 4);
        if (length > n - at - ferry::kSectionHeaderBytes) break;
        const size_t payload = at + ferry::kSectionHeaderBytes;
        if (type == static_cast<uint16_t>(ferry::SectionType::kTrailer)) {
            if (length == 32) {
                for (int i = 0; i < 6; ++i) put32(s, payload + 4 * i, counts[i]);
                put64(s, payload + 24, at);
            }
            put32(s, at + 8, ferry::crc32c(s.data() + payload, length));
            break;
        }
        put32(s, at + 8, ferry::crc32c(s.data() + payload, length));
        ++counts[0];
        switch (static_cast<ferry::SectionType>(type)) {
            case ferry::SectionType::kPort:
                ++counts[1];
                break;
            case ferry::SectionType::kMacs:
                if (length >= 4) counts[2] += get32(s, payload);
                break;
            case ferry::SectionType::kConnections:
            case ferry::SectionType::kConnectionsIpv4:
                if (length >= 4) counts[3] += get32(s, payload);
                break;
            case ferry::SectionType::kConnectionsGone:
                if (length >= 4) counts[4] += get32(s, payload);
                break;
            case ferry::SectionType::kDpiStreams:
                if (length >= 12) counts[5] += get32(s, payload + 8);
                break;
            default:
                break;
        }
        at = payload + length;
    }
    return s;
}

bool valid_port_name(const std::string& name) {
    if (name.empty() || name.size() > ferry::kMaxPortName) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
    });
}

/// What a state that read promises (stream_reader.h, migration_state.h).
void check_state(const MigrationState& s) {
    check(!s.ferryd_version.empty() && s.ferryd_version.size() <= ferry::kMaxVersionText);
    check(s.hyperscan_version.size() <= ferry::kMaxVersionText);
    check(s.ports.size() <= ferry::kMaxStreamPorts);
    // A one-port stream names the moved port first, then the others its connections use.
    check(s.scope == ferry::StreamScope::kSwitch ||
          (s.scope == ferry::StreamScope::kPort && !s.ports.empty()));
    for (size_t i = 0; i < s.ports.size(); ++i) {
        const ferry::MigratedPort& p = s.ports[i];
        check(valid_port_name(p.name));
        for (size_t j = 0; j < i; ++j) check(s.ports[j].name != p.name);
        check(p.addresses.size() <= ferry::kMaxPortAddresses);
        for (const ferry::MigratedAddress& a : p.addresses) {
            check(a.family == 4 || a.family == 6);
            check(a.prefix_length <= (a.family == 4 ? 32 : 128));
        }
    }
    const auto port_ok = [&](uint16_t port) {
        return port == ferry::kNoStreamPort || port < s.ports.size();
    };
    check(s.macs.size() <= ferry::kMaxMacs);
    for (const ferry::MigratedMac& m : s.macs) {
        check(m.port < s.ports.size());
        check(m.vlan <= 4095 || m.vlan == 0xffff);
    }
    std::unordered_set<ferry::CtTuple, ferry::CtTupleHasher> origs;
    for (const ferry::MigratedConnection& c : s.connections) {
        check(origs.insert(c.orig).second);  // deltas applied: one entry per connection
        check(c.orig.ip_version == c.reply.ip_version && c.orig.proto == c.reply.proto &&
              c.orig.zone == c.reply.zone);
        if (c.orig.proto == ferry::kProtoTcp) {
            check(c.tcp_state != ferry::TcpState::kNone && c.tcp_state < ferry::TcpState::kCount);
        } else {
            check(c.tcp_state == ferry::TcpState::kNone);
        }
        check(port_ok(c.port[0]) && port_ok(c.port[1]));
        for (const ferry::TcpPeer& p : c.peer) check(p.scale <= 14 && p.flags <= 0x0f);
    }
    for (const ferry::MigratedDpi& d : s.dpi) {
        check(d.connection < s.connections.size());
        for (int dir = 0; dir < 2; ++dir) {
            check(d.state.dir_state[dir] <= 2);
            check(d.state.streams[dir].size() <= ferry::kMaxDpiStreamBytes);
        }
    }
}

/// The fields that a write and a read carry unchanged (gone tuples are not among them: a state
/// read is written back with its deltas applied).
void check_same(const MigrationState& a, const MigrationState& b) {
    check(a.scope == b.scope && a.stream_id == b.stream_id);
    check(a.ferryd_version == b.ferryd_version && a.hyperscan_version == b.hyperscan_version);
    check(a.ports.size() == b.ports.size() && a.macs.size() == b.macs.size());
    check(a.connections.size() == b.connections.size() && a.dpi.size() == b.dpi.size());
    for (size_t i = 0; i < a.ports.size(); ++i) check(a.ports[i].name == b.ports[i].name);
    for (size_t i = 0; i < a.connections.size(); ++i) {
        check(a.connections[i].orig == b.connections[i].orig);
        check(a.connections[i].reply == b.connections[i].reply);
        check(a.connections[i].flags == b.connections[i].flags);
        check(a.connections[i].packets[1] == b.connections[i].packets[1]);
    }
    for (size_t i = 0; i < a.dpi.size(); ++i) {
        check(a.dpi[i].connection == b.dpi[i].connection);
        check(a.dpi[i].state.streams[1] == b.dpi[i].state.streams[1]);
    }
    check(a.rules_json == b.rules_json);
}

void read_and_rewrite(const uint8_t* data, size_t size) {
    ferry::StreamReadInfo info;
    const ferry::Result<MigrationState> r = ferry::read_stream(data, size, &info);
    if (!r) {
        const std::string& m = r.error().message;
        check(r.error().code == ferry::ErrorCode::kInvalidParams);
        check(m.starts_with("migration stream: ") && m.ends_with(")") &&
              m.find(" (at offset ") != std::string::npos);
        return;
    }
    const MigrationState& first = r.value();
    check_state(first);
    check(info.version >= 1 && info.skipped <= info.sections);

    const std::vector<uint8_t> written = ferry::write_stream(first);
    const ferry::Result<MigrationState> again = ferry::read_stream(written.data(), written.size());
    check(again.ok());
    check_state(again.value());
    check_same(first, again.value());
    check(ferry::write_stream(again.value()) == written);
}

}  // namespace

// The name is libFuzzer's entry point, not ours to choose.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    read_and_rewrite(data, size);
    const std::vector<uint8_t> fixed = repaired(data, size);
    if (!std::equal(fixed.begin(), fixed.end(), data)) read_and_rewrite(fixed.data(), fixed.size());
    return 0;
}
