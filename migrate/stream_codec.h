// Payload encoding of each section type of the migration stream (docs/migration-stream.md).
// Encoders append to a byte vector; decoders parse one payload completely (every byte used,
// every wire value known, every count within its limit) into MigrationState. Context: control.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "migrate/migration_state.h"
#include "migrate/tuple_slots.h"

namespace ferry {

void encode_port(const MigratedPort& p, std::vector<uint8_t>& out);
void encode_macs(const std::vector<MigratedMac>& macs, std::vector<uint8_t>& out);
/// Whether a connection fits a CONNECTIONS_IPV4 entry: both tuples IPv4, of one protocol and
/// zone. The others go in CONNECTIONS entries.
bool fits_ipv4_entry(const MigratedConnection& c);
void encode_connections(const MigratedConnection* c, size_t n, std::vector<uint8_t>& out);
/// Every one of c[0..n) must fit (fits_ipv4_entry).
void encode_connections_ipv4(const MigratedConnection* c, size_t n, std::vector<uint8_t>& out);
void encode_connections_gone(const std::vector<CtTuple>& gone, std::vector<uint8_t>& out);
void encode_dpi_streams(uint64_t hash, const std::vector<MigratedDpi>& dpi,
                        std::vector<uint8_t>& out);
void encode_rules(const std::string& json, std::vector<uint8_t>& out);

struct CtTupleHasher {
    size_t operator()(const CtTuple& t) const { return ct_tuple_hash(t); }
};

/// What the reader keeps between sections: the state read so far and the numbering of
/// connections (a number per entry in stream order; a later entry with the same orig tuple
/// replaces the earlier one and both numbers name it).
struct DecodeContext {
    MigrationState* state = nullptr;
    std::vector<uint32_t> slot_of_number;  // connection number -> index in state->connections
    std::vector<bool> gone;                // by index in state->connections
    TupleSlots slot_of_tuple;              // live ones, by orig (keys: state->connections)
    uint32_t entries = 0;                  // CONNECTIONS and CONNECTIONS_IPV4 entries read
    uint32_t gone_count = 0;               // CONNECTIONS_GONE tuples read
    uint32_t dpi_count = 0;
    uint32_t mac_count = 0;
    /// Live connections a stream may hold at once: what the target has room for
    /// (StreamLimits). A stream past it is refused as it is read, not after it is buffered.
    uint32_t max_connections = UINT32_MAX;
    /// How many connections the whole stream may hold, when its length is known (a stream read
    /// whole): reserved at the first CONNECTIONS section, so that later sections do not move
    /// what the first ones decoded.
    size_t connections_hint = 0;
};

/// Decodes one payload of a known section type into ctx. @return "" or what is wrong with it
std::string decode_port(const uint8_t* p, size_t n, DecodeContext& ctx);
std::string decode_macs(const uint8_t* p, size_t n, DecodeContext& ctx);
std::string decode_connections(const uint8_t* p, size_t n, DecodeContext& ctx);
std::string decode_connections_ipv4(const uint8_t* p, size_t n, DecodeContext& ctx);
std::string decode_connections_gone(const uint8_t* p, size_t n, DecodeContext& ctx);
std::string decode_dpi_streams(const uint8_t* p, size_t n, DecodeContext& ctx);
std::string decode_rules(const uint8_t* p, size_t n, DecodeContext& ctx);
std::string decode_counters(const uint8_t* p, size_t n, DecodeContext& ctx);
std::string decode_precopy_end(const uint8_t* p, size_t n, DecodeContext& ctx);

}  // namespace ferry
