#include "migrate/stream_writer.h"

#include <algorithm>

#include "migrate/crc32c.h"
#include "migrate/large_buffer.h"
#include "migrate/sections.h"
#include "migrate/stream_codec.h"
#include "migrate/wire.h"

namespace ferry {
namespace {

// Connections per CONNECTIONS section: 13.6 MB, well inside the 64 MiB section limit.
constexpr size_t kConnectionsPerSection = 65536;
// Tuples per CONNECTIONS_GONE section: a u32 count and the tuples within 64 MiB.
constexpr size_t kGonePerSection = (kMaxSectionBytes - 4) / kTupleWireBytes;
// A DPI_STREAMS section: the database hash and count, then per entry the connection and per
// direction state, seen, next_seq and length (13 bytes), then the stream bytes.
constexpr size_t kDpiSectionFixedBytes = 12;
constexpr size_t kDpiEntryFixedBytes = 4 + 2 * 13;
// What write_stream reserves beyond the connections: the header, ports, MACs and trailer of a
// usual stream (more only grows the buffer).
constexpr size_t kStreamReserveFixed = size_t{64} << 10;

size_t dpi_entry_bytes(const MigratedDpi& d) {
    return kDpiEntryFixedBytes + d.state.streams[0].size() + d.state.streams[1].size();
}

std::string clip(const std::string& s, size_t n) {
    return s.size() <= n ? s : s.substr(0, n);
}

}  // namespace

StreamWriter::StreamWriter(std::vector<uint8_t>& out, const MigrationState& meta)
    : out_(out), start_(out.size()) {
    WireWriter w(out_);
    w.bytes(kStreamMagic.data(), kStreamMagic.size());
    w.u16(kStreamVersion);
    w.u16(kStreamCompatibleSince);
    const size_t length_at = w.size();
    w.u16(0);  // header_length, patched below
    w.u16(static_cast<uint16_t>(meta.scope));
    w.u64(meta.stream_id);
    w.str8(clip(meta.ferryd_version, kMaxVersionText));
    w.str8(clip(meta.hyperscan_version, kMaxVersionText));
    const size_t header_length = w.size() - start_ + 4;
    out_[length_at] = static_cast<uint8_t>(header_length >> 8);
    out_[length_at + 1] = static_cast<uint8_t>(header_length);
    w.u32(crc32c(out_.data() + start_, header_length - 4));
}

void StreamWriter::put_section(uint16_t type, bool critical, const uint8_t* payload, size_t n) {
    WireWriter w(out_);
    w.u16(type);
    w.u16(critical ? kSectionCritical : 0);
    w.u32(static_cast<uint32_t>(n));
    w.u32(crc32c(payload, n));
    w.bytes(payload, n);
    ++sections_;
}

size_t StreamWriter::begin_section() {
    const size_t at = out_.size();
    out_.resize(at + kSectionHeaderBytes);
    return at;
}

void StreamWriter::end_section(size_t at, uint16_t type, bool critical) {
    const size_t n = out_.size() - at - kSectionHeaderBytes;
    RawWriter w(out_.data() + at);
    w.u16(type);
    w.u16(critical ? kSectionCritical : 0);
    w.u32(static_cast<uint32_t>(n));
    w.u32(crc32c(out_.data() + at + kSectionHeaderBytes, n));
    ++sections_;
}

void StreamWriter::section(uint16_t type, bool critical, const std::vector<uint8_t>& payload) {
    put_section(type, critical, payload.data(), payload.size());
}

void StreamWriter::port(const MigratedPort& p) {
    scratch_.clear();
    encode_port(p, scratch_);
    put_section(static_cast<uint16_t>(SectionType::kPort), true, scratch_.data(), scratch_.size());
    ++ports_;
}

void StreamWriter::macs(const std::vector<MigratedMac>& macs) {
    scratch_.clear();
    encode_macs(macs, scratch_);
    put_section(static_cast<uint16_t>(SectionType::kMacs), false, scratch_.data(), scratch_.size());
    macs_ += static_cast<uint32_t>(macs.size());
}

void StreamWriter::connections(const MigratedConnection* c, size_t n) {
    // A section per run of connections that fit the IPv4 entry, or that do not, so that the
    // stream keeps their order (connection numbers follow it).
    for (size_t at = 0; at < n;) {
        const bool ipv4 = fits_ipv4_entry(c[at]);
        const size_t limit = std::min(n, at + kConnectionsPerSection);
        size_t end = at + 1;
        while (end < limit && fits_ipv4_entry(c[end]) == ipv4) ++end;
        // Encoded in place, behind a header filled in after it: a large capture is not
        // copied a second time.
        const size_t section = begin_section();
        if (ipv4) {
            encode_connections_ipv4(c + at, end - at, out_);
            end_section(section, static_cast<uint16_t>(SectionType::kConnectionsIpv4), true);
        } else {
            encode_connections(c + at, end - at, out_);
            end_section(section, static_cast<uint16_t>(SectionType::kConnections), true);
        }
        connections_ += static_cast<uint32_t>(end - at);
        at = end;
    }
}

void StreamWriter::connections_gone(const std::vector<CtTuple>& gone) {
    // Split so that every section stays within the reader's section limit.
    size_t at = 0;
    do {
        const size_t end = std::min(gone.size(), at + kGonePerSection);
        scratch_.clear();
        if (at == 0 && end == gone.size()) {
            encode_connections_gone(gone, scratch_);
        } else {
            encode_connections_gone(
                std::vector<CtTuple>(gone.begin() + static_cast<ptrdiff_t>(at),
                                     gone.begin() + static_cast<ptrdiff_t>(end)),
                scratch_);
        }
        put_section(static_cast<uint16_t>(SectionType::kConnectionsGone), true, scratch_.data(),
                    scratch_.size());
        gone_ += static_cast<uint32_t>(end - at);
        at = end;
    } while (at < gone.size());
}

void StreamWriter::dpi_streams(uint64_t hash, const std::vector<MigratedDpi>& dpi) {
    // Compressed streams add up: split so that every section stays within the reader's section
    // limit (the same hash in each). An entry too large for any section still goes, alone, and
    // the reader refuses it.
    size_t at = 0;
    do {
        size_t end = at, bytes = kDpiSectionFixedBytes;
        while (end < dpi.size() &&
               (end == at || bytes + dpi_entry_bytes(dpi[end]) <= kMaxSectionBytes))
            bytes += dpi_entry_bytes(dpi[end++]);
        scratch_.clear();
        if (at == 0 && end == dpi.size()) {
            encode_dpi_streams(hash, dpi, scratch_);
        } else {
            encode_dpi_streams(hash,
                               std::vector<MigratedDpi>(dpi.begin() + static_cast<ptrdiff_t>(at),
                                                        dpi.begin() + static_cast<ptrdiff_t>(end)),
                               scratch_);
        }
        put_section(static_cast<uint16_t>(SectionType::kDpiStreams), false, scratch_.data(),
                    scratch_.size());
        dpi_ += static_cast<uint32_t>(end - at);
        at = end;
    } while (at < dpi.size());
}

void StreamWriter::precopy_end() {
    put_section(static_cast<uint16_t>(SectionType::kPrecopyEnd), false, nullptr, 0);
}

void StreamWriter::rules(const std::string& json) {
    scratch_.clear();
    encode_rules(json, scratch_);
    put_section(static_cast<uint16_t>(SectionType::kRules), false, scratch_.data(),
                scratch_.size());
}

std::vector<uint8_t> StreamWriter::take() {
    if (start_ == 0) {
        std::vector<uint8_t> part;
        part.swap(out_);
        taken_ += part.size();
        return part;
    }
    std::vector<uint8_t> part(out_.begin() + static_cast<std::ptrdiff_t>(start_), out_.end());
    out_.resize(start_);
    taken_ += part.size();
    return part;
}

void StreamWriter::finish() {
    const uint64_t before = taken_ + (out_.size() - start_);
    std::vector<uint8_t> payload;
    WireWriter w(payload);
    w.u32(sections_);
    w.u32(ports_);
    w.u32(macs_);
    w.u32(connections_);
    w.u32(gone_);
    w.u32(dpi_);
    w.u64(before);
    put_section(static_cast<uint16_t>(SectionType::kTrailer), true, payload.data(), payload.size());
}

std::vector<uint8_t> write_stream(const MigrationState& s) {
    std::vector<uint8_t> out;
    // The connections are most of a stream: reserved at once rather than grown by copies.
    const size_t sections = s.connections.size() / kConnectionsPerSection + 1;
    reserve_large(out, kStreamReserveFixed + s.connections.size() * kConnectionWireBytes +
                           sections * (kSectionHeaderBytes + 4));
    StreamWriter w(out, s);
    write_sections(w, s, false);  // the format table, in stream order (migrate/sections.h)
    w.finish();
    return out;
}

}  // namespace ferry
