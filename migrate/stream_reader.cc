#include "migrate/stream_reader.h"

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "migrate/crc32c.h"
#include "migrate/sections.h"
#include "migrate/stream_codec.h"
#include "migrate/wire.h"

namespace ferry {
namespace {

Error stream_error(const std::string& what, size_t offset) {
    return make_error(ErrorCode::kInvalidParams,
                      "migration stream: " + what + " (at offset " + std::to_string(offset) + ")");
}

std::string hex16(uint16_t v) {
    static const char* d = "0123456789abcdef";
    std::string s = "0x";
    for (int i = 12; i >= 0; i -= 4) s += d[(v >> i) & 15];
    return s;
}

/// Checks the trailer against what was read. @return "" or the mismatch
std::string check_trailer(const uint8_t* p, size_t n, uint32_t sections, const DecodeContext& c,
                          uint64_t before) {
    WireReader r(p, n);
    const uint32_t want[6] = {sections,     static_cast<uint32_t>(c.state->ports.size()),
                              c.mac_count,  c.entries,
                              c.gone_count, c.dpi_count};
    static const char* names[6] = {"sections", "ports", "macs", "connections", "gone", "dpi"};
    uint32_t got[6];
    for (uint32_t& g : got) g = r.u32();
    const uint64_t bytes = r.u64();
    if (!r.done()) return "TRAILER payload is not 32 bytes";
    for (int i = 0; i < 6; ++i)
        if (got[i] != want[i])
            return std::string("TRAILER counts ") + std::to_string(got[i]) + " " + names[i] +
                   ", the stream has " + std::to_string(want[i]);
    if (bytes != before)
        return "TRAILER says " + std::to_string(bytes) + " bytes before it, the stream has " +
               std::to_string(before);
    return "";
}

/// Drops connections a CONNECTIONS_GONE removed and maps DPI entries to final indices. A gone
/// tuple that a later entry sent again names a live connection: it leaves `gone`, so that the
/// state written back (write_stream) does not end that connection.
void compact(MigrationState& s, const DecodeContext& c) {
    // The index's keys are the connections before compaction: asked first.
    if (!s.gone.empty())
        std::erase_if(s.gone, [&](const CtTuple& t) {
            return c.slot_of_tuple.find(t, s.connections) != TupleSlots::kNone;
        });
    // In place: a migration target reads this while the source's workers wait.
    std::vector<uint32_t> final_index(s.connections.size(), UINT32_MAX);
    size_t kept = 0;
    for (size_t k = 0; k < s.connections.size(); ++k) {
        if (c.gone[k]) continue;
        final_index[k] = static_cast<uint32_t>(kept);
        if (kept != k) s.connections[kept] = s.connections[k];
        ++kept;
    }
    s.connections.resize(kept);
    std::erase_if(s.dpi, [&](MigratedDpi& d) {
        const uint32_t idx = final_index[c.slot_of_number[d.connection]];
        d.connection = idx;
        return idx == UINT32_MAX;
    });
}

}  // namespace

StreamLimits stream_limits_for_room(uint32_t room) {
    StreamLimits l;
    l.connections = room;
    l.bytes = std::min(kMaxStreamBytes,
                       2 * size_t{kMaxSectionBytes} + size_t{room} * kStreamBytesPerConnection);
    return l;
}

Result<size_t> StreamReader::header(const uint8_t* data, size_t n) {
    WireReader r(data, n);
    std::array<uint8_t, 8> magic{};
    r.bytes(magic.data(), 8);
    if (!r.ok()) return stream_error("truncated header", 0);
    std::array<uint8_t, 8> swapped = kStreamMagic;
    std::reverse(swapped.begin(), swapped.end());
    if (magic == swapped)
        return stream_error("byte-swapped stream (written in the wrong byte order)", 0);
    if (magic != kStreamMagic) return stream_error("not a ferry migration stream (bad magic)", 0);
    const uint16_t version = r.u16();
    const uint16_t compatible_since = r.u16();
    const uint16_t header_length = r.u16();
    if (!r.ok()) return stream_error("truncated header", r.pos());
    if (version > kStreamVersion && compatible_since > kStreamVersion)
        return stream_error("stream version " + std::to_string(version) +
                                " needs a reader of version " + std::to_string(compatible_since) +
                                " or later; this ferryd reads up to " +
                                std::to_string(kStreamVersion),
                            8);
    if (version == 0 || compatible_since > version)
        return stream_error("bad stream version " + std::to_string(version) +
                                " (compatible since " + std::to_string(compatible_since) + ")",
                            8);
    if (header_length > n) return stream_error("truncated header", n);
    if (header_length < 30)
        return stream_error("header_length " + std::to_string(header_length), 12);
    // The CRC first, as for sections: a damaged header is a CRC mismatch, not a malformed field.
    WireReader crc_at(data + header_length - 4, 4);
    if (crc_at.u32() != crc32c(data, header_length - 4u))
        return stream_error("header CRC mismatch", header_length - 4u);
    WireReader h(data, header_length - 4);
    h.view(14);
    const uint16_t scope = h.u16();
    state_.stream_id = h.u64();
    if (!h.str8(&state_.ferryd_version, kMaxVersionText) || state_.ferryd_version.empty() ||
        !h.str8(&state_.hyperscan_version, kMaxVersionText))
        return stream_error("malformed header", h.pos());
    if (scope > static_cast<uint16_t>(StreamScope::kPort))
        return stream_error("unknown scope " + std::to_string(scope), 14);
    state_.scope = static_cast<StreamScope>(scope);
    ctx_.state = &state_;
    seen_.version = version;
    header_length_ = header_length;
    return size_t{header_length};
}

Result<size_t> StreamReader::section(const uint8_t* data, size_t avail, size_t at) {
    if (avail < kSectionHeaderBytes)
        return stream_error("truncated before the trailer", at + avail);
    WireReader sh(data, kSectionHeaderBytes);
    const uint16_t type = sh.u16();
    const uint16_t flags = sh.u16();
    const uint32_t length = sh.u32();
    const uint32_t crc = sh.u32();
    const bool critical = (flags & kSectionCritical) != 0;
    if (length > kMaxSectionBytes)
        return stream_error("section " + hex16(type) + " of " + std::to_string(length) +
                                " bytes (at most " + std::to_string(kMaxSectionBytes) + ")",
                            at);
    if (avail - kSectionHeaderBytes < length)
        return stream_error("truncated inside section " + hex16(type), at + avail);
    const uint8_t* payload = data + kSectionHeaderBytes;
    if (crc32c(payload, length) != crc)
        return stream_error("CRC mismatch in section " + hex16(type), at);
    if (type == static_cast<uint16_t>(SectionType::kTrailer)) {
        if (std::string e = check_trailer(payload, length, seen_.sections, ctx_, at); !e.empty())
            return stream_error(e, at);
        done_ = true;
        return kSectionHeaderBytes + length;
    }
    // The format table's read column (migrate/sections.h).
    const SectionCodec* kind = find_section(type);
    if (kind != nullptr && kind->section == SectionType::kPort && past_ports_)
        return stream_error("PORT: a PORT section after other sections (PORT sections come first)",
                            at);
    if (kind == nullptr) {
        if (critical) return stream_error("unknown critical section type " + hex16(type), at);
        ++seen_.skipped;
    } else if (std::string e = kind->read(payload, length, ctx_); !e.empty()) {
        return stream_error(std::string(kind->name) + ": " + e, at);
    }
    if (kind != nullptr && kind->section != SectionType::kPort) past_ports_ = true;
    ++seen_.sections;
    return kSectionHeaderBytes + length;
}

Status StreamReader::check_complete() const {
    if (!done_) return stream_error("truncated before the trailer", 0);
    if (state_.scope == StreamScope::kPort && state_.ports.empty())
        return stream_error("a one-port stream without a port", header_length_);
    return Ok{};
}

Result<MigrationState> StreamReader::finish(StreamReadInfo* info) {
    if (!done_) return stream_error("truncated before the trailer", 0);
    if (state_.scope == StreamScope::kPort && state_.ports.empty())
        return stream_error("a one-port stream without a port", header_length_);
    compact(state_, ctx_);
    if (info != nullptr) *info = seen_;
    return std::move(state_);
}

Result<MigrationState> read_stream(const uint8_t* data, size_t n, StreamReadInfo* info) {
    StreamReader reader;
    reader.expect_bytes(n);
    auto header = reader.header(data, n);
    if (!header) return header.error();
    size_t at = *header;
    while (!reader.done()) {
        auto used = reader.section(data + at, n - at, at);
        if (!used) return used.error();
        at += *used;
    }
    if (at != n) return stream_error("bytes after the trailer", at);
    return reader.finish(info);
}

}  // namespace ferry
