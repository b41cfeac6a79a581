// The format half of the stage table (migrate/stages.h): one row per section type this version
// of the stream knows, in stream order, with its name, how a state's sections of that type are
// written and how one is read. The full writer (write_stream), the delta writer and the reader
// (StreamReader) walk it; the stage table adds to each row how this switch's state is captured
// into it and installed from it. It stays apart from the stage table so that the format alone
// (tests, fuzzers, stream tools) needs no switch. Context: any.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "migrate/migration_state.h"
#include "migrate/stream_codec.h"
#include "migrate/stream_format.h"

namespace ferry {

class StreamWriter;

/// Writes the sections of one type that state s holds, nothing when it has none. delta: s is
/// what changed after a pre-copy (no PORT sections; gone tuples name pre-copied connections).
/// Context: control.
using SectionWrite = void (*)(StreamWriter& w, const MigrationState& s, bool delta);
/// Decodes one payload of the type into ctx. @return "" or what is wrong with it
using SectionRead = std::string (*)(const uint8_t* payload, size_t n, DecodeContext& ctx);

struct SectionCodec {
    SectionType section;
    std::string_view name;  // as the reader's messages name it
    SectionWrite write;     // null: not written from a state (COUNTERS, PRECOPY_END) or by
                            // another row (CONNECTIONS_IPV4)
    SectionRead read;
};

void write_ports(StreamWriter& w, const MigrationState& s, bool delta);
void write_macs(StreamWriter& w, const MigrationState& s, bool delta);
void write_connections(StreamWriter& w, const MigrationState& s, bool delta);
void write_connections_gone(StreamWriter& w, const MigrationState& s, bool delta);
void write_dpi_streams(StreamWriter& w, const MigrationState& s, bool delta);
void write_rules(StreamWriter& w, const MigrationState& s, bool delta);

inline constexpr std::array<SectionCodec, 9> kSectionCodecs = {{
    {SectionType::kPort, "PORT", write_ports, decode_port},
    {SectionType::kMacs, "MACS", write_macs, decode_macs},
    {SectionType::kConnections, "CONNECTIONS", write_connections, decode_connections},
    // Written by CONNECTIONS' row: each connection in the form that fits it.
    {SectionType::kConnectionsIpv4, "CONNECTIONS_IPV4", nullptr, decode_connections_ipv4},
    {SectionType::kConnectionsGone, "CONNECTIONS_GONE", write_connections_gone,
     decode_connections_gone},
    {SectionType::kDpiStreams, "DPI_STREAMS", write_dpi_streams, decode_dpi_streams},
    {SectionType::kRules, "RULES", write_rules, decode_rules},
    {SectionType::kCounters, "COUNTERS", nullptr, decode_counters},
    {SectionType::kPrecopyEnd, "PRECOPY_END", nullptr, decode_precopy_end},
}};

/// The row of a section type. Context: any (compile time too). @return null for a type this
/// version does not know
constexpr const SectionCodec* find_section(uint16_t type) {
    for (const SectionCodec& c : kSectionCodecs)
        if (static_cast<uint16_t>(c.section) == type) return &c;
    return nullptr;
}

/// The row of a section type this version knows. Context: any (compile time too).
constexpr const SectionCodec& section_codec(SectionType t) {
    return *find_section(static_cast<uint16_t>(t));
}

/// Walks the table's write column: every section of s, in stream order (the full writer with
/// delta false, the delta writer with delta true). Context: control.
void write_sections(StreamWriter& w, const MigrationState& s, bool delta);

}  // namespace ferry
