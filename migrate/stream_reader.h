// Reads and validates a whole migration stream (docs/migration-stream.md) into a
// MigrationState: header (magic, byte order, versions, CRC), every section (CRC, known type or
// non-critical, payload consumed exactly), the trailer's counts. Nothing is installed here: the
// result is the shadow state a target checks against its own before it pauses its workers.
// Context: control.
#pragma once

#include <cstddef>
#include <cstdint>

#include "control/result.h"
#include "migrate/migration_state.h"

namespace ferry {

/// What the reader saw besides the state: for logs and migrate.status.
struct StreamReadInfo {
    uint16_t version = 0;
    uint32_t sections = 0;
    uint32_t skipped = 0;  // unknown non-critical sections
};

/// Parses data[0, n). Connections that a CONNECTIONS_GONE removed are dropped, and DPI
/// entries renumbered to index `connections`.
/// @return the state, or kInvalidParams: "migration stream: <what> (at offset N)"; a stream
///         shorter than its trailer says "truncated", a wrong-endian one "byte-swapped"
Result<MigrationState> read_stream(const uint8_t* data, size_t n, StreamReadInfo* info = nullptr);

}  // namespace ferry
