// The stage table: one row per kind of state a stream carries, in stream order (ports with their
// addresses, learned MACs, connections, connections gone since a pre-copy, DPI stream state,
// then the sections that carry nothing of this switch's). Each row is a section's format
// (migrate/sections.h: name, section type, write, read) and how this switch's state is captured
// into it and installed from it, through its MigrationHost. MigrationControl walks it: capture
// (and the delta after a pre-copy) its capture column, install (and the commit of a pre-copy
// placed ahead) its install column; the full writer, the delta writer and the reader walk the
// format half. Besides, MigrationControl pre-copies while traffic runs, places a pre-copy ahead
// (dormant) or removes it, and retires moved state after the target committed. Every operation
// here runs on the control thread, with the workers paused or not yet started unless it says
// it pauses them itself.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dataplane/result.h"
#include "migrate/host.h"
#include "migrate/migration_state.h"
#include "migrate/sections.h"
#include "migrate/stream_codec.h"
#include "migrate/stream_reader.h"

namespace ferry {

/// What install() did, for replies and logs.
struct InstallReport {
    size_t connections = 0;
    size_t dpi_expanded = 0;
    size_t dpi_restarted = 0;
    size_t macs = 0;
    size_t addresses = 0;  // observed port addresses taken
};

/// What a pre-copy sent, to find by the time the workers pause what changed since.
struct Precopy {
    struct Seen {
        uint16_t worker;
        uint32_t index;
        CtTuple orig;
        uint64_t packets;  // both directions: any packet since changes it
        uint8_t flags;
        uint8_t tcp_state;
        uint32_t mark;
    };
    MigrationState state;          // ports, connections and DPI streams as sent
    std::vector<Seen> seen;        // one per connection of state, in the same order
    std::optional<uint16_t> slot;  // the port of a one-port migration
    std::vector<uint16_t> stream_port;
};

/// Connections a migration target placed ahead, dormant, while its traffic ran: by slot of
/// the stream reader's partial state.
struct Staged {
    std::vector<uint16_t> local_port;                   // stream port number -> local slot
    std::vector<std::pair<uint16_t, uint32_t>> placed;  // slot -> (worker, entry index)
    size_t slots = 0;                                   // slots staged (the pre-copy's)
};

/// What a capture carries from stage to stage. A delta (since set) captures what changed since
/// a pre-copy: its ports, scope and stream id are the pre-copy's.
struct CaptureWalk {
    CaptureWalk(MigrationHost& h, std::optional<std::string> p, MigrationState& o,
                const Precopy* s = nullptr)
        : host(h), port(std::move(p)), out(o), since(s) {}
    MigrationHost& host;
    std::optional<std::string> port;  // a one-port capture's port (none: the whole switch)
    MigrationState& out;
    const Precopy* since = nullptr;
    // Set by PORT for the stages after it.
    std::optional<uint16_t> slot;       // the moved port's slot
    std::vector<uint16_t> stream_port;  // local slot -> stream port number
    // A delta, CONNECTIONS -> CONNECTIONS_GONE: which pre-copied connections are tracked still.
    std::vector<bool> still;
};

/// What an install carries from stage to stage. A commit (staged set) completes what stage()
/// placed ahead with the rest of the stream (ctx: the reader's numbering, first_delta_entry:
/// the first entry sent after the pre-copy).
struct InstallWalk {
    InstallWalk(MigrationHost& h, const MigrationState& state) : host(h), s(state) {}
    MigrationHost& host;
    const MigrationState& s;
    InstallReport report;
    Staged* staged = nullptr;
    const DecodeContext* ctx = nullptr;
    uint32_t first_delta_entry = 0;
    // Set by PORT and CONNECTIONS for the stages after them.
    std::vector<uint16_t> local_port;                   // stream port number -> local slot
    std::vector<std::pair<uint16_t, uint32_t>> placed;  // by stream connection (not a commit)
    /// Where stream connection n went: (worker, entry index), index kCtNone when nowhere.
    std::pair<uint16_t, uint32_t> where(uint32_t n) const;
};

/// One row: the section's format, then what this switch does with it. Context: control.
struct Stage {
    const SectionCodec& format;
    /// Source: adds this kind of the host's state to walk.out (with the workers paused).
    /// Null: nothing of its own (what a row carries is captured with another one's).
    /// @return Ok or why nothing can be captured
    Status (*capture)(CaptureWalk& walk);
    /// Target: puts this kind of walk.s into the host's tables (with the workers paused or
    /// not started). Null: nothing to install. @return Ok or the refusal
    Status (*install)(InstallWalk& walk);
    /// Whether install may refuse. The installer runs those first, in table order (each
    /// changes nothing or undoes itself when it refuses), then the others, which only add.
    bool may_refuse;
};

// The stages' own columns (migrate/stages.cc). Context: control.
Status capture_ports(CaptureWalk& walk);        // header fields, ports with MAC and addresses
Status install_ports(InstallWalk& walk);        // each stream port to a local one, by name
Status capture_macs(CaptureWalk& walk);         // the scope's learned MACs
Status install_macs(InstallWalk& walk);         // and the ports' observed addresses
Status capture_connections(CaptureWalk& walk);  // with each one's DPI stream state
Status install_connections(InstallWalk& walk);  // all or nothing; a commit activates
Status capture_gone(CaptureWalk& walk);         // a delta: pre-copied ones that ended
Status capture_dpi(CaptureWalk& walk);          // the database's hash
Status install_dpi(InstallWalk& walk);          // each stream's state onto its connection

inline constexpr std::array<Stage, kSectionCodecs.size()> kStages = {{
    {section_codec(SectionType::kPort), capture_ports, install_ports, true},
    {section_codec(SectionType::kMacs), capture_macs, install_macs, false},
    {section_codec(SectionType::kConnections), capture_connections, install_connections, true},
    // The same connections in their compact form: captured and installed with the row above.
    {section_codec(SectionType::kConnectionsIpv4), nullptr, nullptr, false},
    // Nothing to install: the reader drops the connections they name, a commit removes them.
    {section_codec(SectionType::kConnectionsGone), capture_gone, nullptr, false},
    {section_codec(SectionType::kDpiStreams), capture_dpi, install_dpi, false},
    // Configuration does not move: the target runs with its own.
    {section_codec(SectionType::kRules), nullptr, nullptr, false},
    {section_codec(SectionType::kCounters), nullptr, nullptr, false},
    // A marker between a pre-copy and the rest (the target answers READY).
    {section_codec(SectionType::kPrecopyEnd), nullptr, nullptr, false},
}};

/// Every format row has its stage, in the same order. Context: compile time.
constexpr bool stages_follow_sections() {
    for (size_t i = 0; i < kStages.size(); ++i)
        if (&kStages[i].format != &kSectionCodecs[i]) return false;
    return true;
}
static_assert(stages_follow_sections(), "kStages: one row per kSectionCodecs row, in its order");

class MigrationControl {
public:
    explicit MigrationControl(MigrationHost& host) : host_(host) {}

    /// The state of one port (its connections: those whose either direction's first packet
    /// came in on it; its learned MACs) or, without a port, of the whole switch.
    /// Context: control, workers paused. @return kNotFound for an unknown port
    Result<MigrationState> capture(const std::optional<std::string>& port) const;

    /// What a stream coming here may hold: no more connections than the shards have room for
    /// now, and bytes in proportion (stream_limits_for_room). Context: control.
    StreamLimits stream_limits() const;

    /// Pre-copy: the connections of a port or the switch while the workers run, pausing them
    /// for one slice of `slice` table slots at a time. Context: control, workers running.
    Result<Precopy> precopy(const std::optional<std::string>& port, uint32_t slice) const;
    /// What changed since p: connections new or changed (state.connections, with their DPI
    /// state), those that ended (state.gone), and the learned MACs. Context: control, workers
    /// paused.
    MigrationState delta(const Precopy& p) const;

    /// Installs s: every stream port must exist here by name; no connection may clash with one
    /// tracked here (either tuple, any worker); owner shards and zone limits must have room.
    /// All of that is checked before anything changes; if an insertion still fails, what was
    /// installed is removed again. Context: control, workers paused or not started.
    /// @return the report, or kNotFound / kConflict / kFailed with the reason
    Result<InstallReport> install(const MigrationState& s);

    /// Places the connections of a pre-copy (partial) dormant, `slice` per brief pause while
    /// traffic runs; their packets are dropped (ct_migrating) until commit_staged(). Checks as
    /// install() does; on any failure what was placed is removed. Context: control.
    Result<Staged> stage(const MigrationState& partial, uint32_t slice);
    /// Applies the rest of the stream to what stage() placed, with the workers paused: slots
    /// sent again since the pre-copy (entries numbered from first_delta_entry on) are placed
    /// anew, gone ones removed, the others activated; then DPI states and MACs. On failure
    /// everything placed is removed. Context: control, workers paused.
    Result<InstallReport> commit_staged(Staged& st, const MigrationState& partial,
                                        const DecodeContext& ctx, uint32_t first_delta_entry);
    /// Removes what stage() placed (the migration failed), `slice` per brief pause; never
    /// without the pause. Context: control. @return false when the workers would not pause
    /// (a few tries each slice): what is left stays placed
    bool unstage(Staged& st, uint32_t slice);

    /// Removes connections [from, from + count) of s from this switch after the target
    /// committed them: no packet is sent. Context: control, workers paused.
    /// @return connections removed
    size_t retire(const MigrationState& s, size_t from, size_t count);

private:
    MigrationHost& host_;
};

}  // namespace ferry
