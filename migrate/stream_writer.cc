#include "migrate/stream_writer.h"

#include <algorithm>

#include "migrate/crc32c.h"
#include "migrate/stream_codec.h"
#include "migrate/wire.h"

namespace ferry {
namespace {

// Connections per CONNECTIONS section: 13.6 MB, well inside the 64 MiB section limit.
constexpr size_t kConnectionsPerSection = 65536;

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
    for (size_t at = 0; at < n; at += kConnectionsPerSection) {
        const size_t k = std::min(kConnectionsPerSection, n - at);
        scratch_.clear();
        encode_connections(c + at, k, scratch_);
        put_section(static_cast<uint16_t>(SectionType::kConnections), true, scratch_.data(),
                    scratch_.size());
        connections_ += static_cast<uint32_t>(k);
    }
}

void StreamWriter::connections_gone(const std::vector<CtTuple>& gone) {
    scratch_.clear();
    encode_connections_gone(gone, scratch_);
    put_section(static_cast<uint16_t>(SectionType::kConnectionsGone), true, scratch_.data(),
                scratch_.size());
    gone_ += static_cast<uint32_t>(gone.size());
}

void StreamWriter::dpi_streams(uint64_t hash, const std::vector<MigratedDpi>& dpi) {
    scratch_.clear();
    encode_dpi_streams(hash, dpi, scratch_);
    put_section(static_cast<uint16_t>(SectionType::kDpiStreams), false, scratch_.data(),
                scratch_.size());
    dpi_ += static_cast<uint32_t>(dpi.size());
}

void StreamWriter::rules(const std::string& json) {
    scratch_.clear();
    encode_rules(json, scratch_);
    put_section(static_cast<uint16_t>(SectionType::kRules), false, scratch_.data(),
                scratch_.size());
}

void StreamWriter::finish() {
    const uint64_t before = out_.size() - start_;
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
    StreamWriter w(out, s);
    for (const MigratedPort& p : s.ports) w.port(p);
    if (!s.macs.empty()) w.macs(s.macs);
    if (!s.connections.empty()) w.connections(s.connections.data(), s.connections.size());
    if (!s.gone.empty()) w.connections_gone(s.gone);
    if (!s.dpi.empty()) w.dpi_streams(s.dpi_hash, s.dpi);
    if (!s.rules_json.empty()) w.rules(s.rules_json);
    w.finish();
    return out;
}

}  // namespace ferry
