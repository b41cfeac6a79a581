// Writes a migration stream (docs/migration-stream.md): the header, sections in the order the
// caller gives them (PORT sections first), and the trailer with the counts it kept. Context:
// control.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "migrate/migration_state.h"

namespace ferry {

class StreamWriter {
public:
    /// Appends to out, starting with the header of meta (scope, stream_id, versions).
    StreamWriter(std::vector<uint8_t>& out, const MigrationState& meta);

    void port(const MigratedPort& p);
    void macs(const std::vector<MigratedMac>& macs);
    /// Connections, split into sections that stay within the section size limit.
    void connections(const MigratedConnection* c, size_t n);
    void connections_gone(const std::vector<CtTuple>& gone);
    void dpi_streams(uint64_t hash, const std::vector<MigratedDpi>& dpi);
    void rules(const std::string& json);
    /// Marks the end of a pre-copy: a target answers it with READY (docs/migration-stream.md).
    void precopy_end();
    /// Any section, as given (tests write unknown types with it).
    void section(uint16_t type, bool critical, const std::vector<uint8_t>& payload);
    /// The trailer; nothing may follow it.
    void finish();
    /// Hands over what was written so far (a part to send) and goes on in an empty buffer;
    /// the trailer still counts every part. Context: control.
    std::vector<uint8_t> take();

private:
    void put_section(uint16_t type, bool critical, const uint8_t* payload, size_t n);
    /// A section written in place: room for its header, then (after the payload is appended
    /// to out_) the header filled in. @return where the section starts
    size_t begin_section();
    void end_section(size_t at, uint16_t type, bool critical);

    std::vector<uint8_t>& out_;
    size_t start_;
    uint64_t taken_ = 0;  // bytes of this stream handed over by take()
    uint32_t sections_ = 0, ports_ = 0, macs_ = 0, connections_ = 0, gone_ = 0, dpi_ = 0;
    std::vector<uint8_t> scratch_;
};

/// The whole of s as one stream: its ports, MACs, connections, gone tuples, DPI streams and
/// rules, as the format table (migrate/sections.h) orders them. Context: control.
std::vector<uint8_t> write_stream(const MigrationState& s);

}  // namespace ferry
