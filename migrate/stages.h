// Moving state out of and into this ferryd, through its MigrationHost: capture the state of one
// port or the whole switch into a MigrationState (stream form), pre-copy it while traffic runs
// and find what changed since, install a validated MigrationState into the workers' tables (all
// or nothing), place a pre-copy ahead (dormant) and commit or remove it, retire moved state
// after the target committed. Every operation here runs on the control thread, with the
// workers paused or not yet started unless it says it pauses them itself.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "dataplane/result.h"
#include "migrate/host.h"
#include "migrate/migration_state.h"
#include "migrate/stream_codec.h"

namespace ferry {

/// What install() did, for replies and logs.
struct InstallReport {
    size_t connections = 0;
    size_t dpi_expanded = 0;
    size_t dpi_restarted = 0;
    size_t macs = 0;
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

class MigrationControl {
public:
    explicit MigrationControl(MigrationHost& host) : host_(host) {}

    /// The state of one port (its connections: those whose either direction's first packet
    /// came in on it; its learned MACs) or, without a port, of the whole switch.
    /// Context: control, workers paused. @return kNotFound for an unknown port
    Result<MigrationState> capture(const std::optional<std::string>& port) const;

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
