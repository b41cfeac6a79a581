// Reads and validates a whole migration stream (docs/migration-stream.md) into a
// MigrationState: header (magic, byte order, versions, CRC), every section (CRC, known type or
// non-critical, payload consumed exactly), the trailer's counts. Nothing is installed here: the
// result is the shadow state a target checks against its own before it pauses its workers.
// Context: control.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dataplane/result.h"
#include "migrate/migration_state.h"
#include "migrate/stream_codec.h"
#include "migrate/stream_format.h"

namespace ferry {

/// What a migration target bounds a stream by: what it can hold, so that a stream of any size
/// (a hostile one claiming gigabytes) is refused while it arrives, within memory in proportion
/// to the target's own tables. The defaults are the format's own limits (files, tools).
struct StreamLimits {
    uint32_t connections = UINT32_MAX;  // live connections at once in the stream
    size_t bytes = kMaxStreamBytes;     // the whole stream, as a transport buffers it
};

/// The limits of a target with room for `room` more connections. bytes: two sections of the
/// largest size (ports, MACs, rules, counters, sections skipped), then per connection of room
/// kStreamBytesPerConnection (it may be sent twice, in the pre-copy and the delta, with DPI
/// state of 1 KiB per direction on average, and end in a gone tuple), never above
/// kMaxStreamBytes. Context: any.
StreamLimits stream_limits_for_room(uint32_t room);

/// What the reader saw besides the state: for logs and migrate.status.
struct StreamReadInfo {
    uint16_t version = 0;
    uint32_t sections = 0;
    uint32_t skipped = 0;  // unknown non-critical sections
};

/// The reader one piece at a time: the header, then each section as it arrives (a migration
/// target decodes the pre-copy while the rest is still on the way), then finish().
class StreamReader {
public:
    explicit StreamReader(const StreamLimits& limits = {}) {
        ctx_.max_connections = limits.connections;
    }
    StreamReader(const StreamReader&) = delete;  // its decode context points at its state
    StreamReader& operator=(const StreamReader&) = delete;
    /// Checks the header at the start of data. @return its length, or the error
    Result<size_t> header(const uint8_t* data, size_t n);
    /// Checks and decodes the section at data (avail bytes there, at stream offset `at`).
    /// @return the section's length (header and payload), or the error
    Result<size_t> section(const uint8_t* data, size_t avail, size_t at);
    /// Whether the trailer was read.
    bool done() const { return done_; }
    /// The state, once done(); call once.
    Result<MigrationState> finish(StreamReadInfo* info = nullptr);

    /// The state as decoded so far, before finish() drops gone connections: connections by
    /// slot (a later entry of the same connection replaced its slot), with context() telling
    /// which entry numbers went to which slot and which slots are gone. A migration target
    /// installs a pre-copy from it ahead of the trailer.
    const MigrationState& partial() const { return state_; }
    const DecodeContext& context() const { return ctx_; }
    /// The whole stream is n bytes: its connections are reserved for at once (a hint; the
    /// limits still apply).
    void expect_bytes(size_t n) { ctx_.connections_hint = n / kConnectionIpv4WireBytes; }
    /// The checks finish() makes besides compacting, once done(). @return Ok or the error
    Status check_complete() const;

private:
    MigrationState state_;
    DecodeContext ctx_;
    StreamReadInfo seen_;
    uint16_t header_length_ = 0;
    bool past_ports_ = false;
    bool done_ = false;
};

/// Parses data[0, n). Connections that a CONNECTIONS_GONE removed are dropped, and DPI
/// entries renumbered to index `connections`.
/// @return the state, or kInvalidParams: "migration stream: <what> (at offset N)"; a stream
///         shorter than its trailer says "truncated", a wrong-endian one "byte-swapped"
Result<MigrationState> read_stream(const uint8_t* data, size_t n, StreamReadInfo* info = nullptr);

}  // namespace ferry
