// The phases of a live migration (migrate/session.h), one table: the name migrate.status prints,
// the session commands each allows, and whether this side's workers are paused in it.
// migrate.status is allowed in every phase; migrate.save and migrate.load are not the session's
// and run in any (with the workers held by a migration, they run without releasing them).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ferry {

enum class MigrationPhase : uint8_t {
    // No migration yet. Allows receive, send. Workers run.
    kIdle,
    // Target: waiting for a source, refusing the ones not let in. Allows cancel (stop
    // listening). Workers run.
    kListening,
    // Target: reading and checking the stream on the migration thread. Allows nothing. Workers
    // run.
    kReceiving,
    // Target: placing the pre-copy ahead, dormant. Allows nothing. Workers paused a slice at a
    // time, briefly.
    kStaging,
    // Target: the control thread installs (or commits what was placed ahead). Allows nothing.
    // Workers paused for the install.
    kInstalling,
    // Source: sending the pre-copy while traffic runs. Allows nothing. Workers run.
    kPrecopy,
    // Source: the pre-copy is sent, waiting for the target's READY (then settle_ms). Allows
    // nothing. Workers run.
    kPrecopySent,
    // Source held after READY (hold=true). Allows continue, cancel. Workers run.
    kReady,
    // Source: migrate.continue said go on; the control thread is asked to pause the workers.
    // Allows nothing. Workers run until it does (then kSending).
    kContinuing,
    // Either side: migrate.cancel said give up. Allows nothing. Workers run.
    kCancelling,
    // Source: sending the stream (or, after a pre-copy, what changed since). Allows nothing.
    // Workers paused, until the outcome is known.
    kSending,
    // Source: everything sent, waiting for the target's answer. Allows nothing. Workers paused.
    kWaitingCommit,
    // Source: the answer was lost or late; asking the target what became of the stream.
    // Allows nothing. Workers paused.
    kResolving,
    // Ended: the target installed the stream (on the source, the moved state is retired).
    // Allows receive, send. Workers run.
    kCommitted,
    // Ended: the target refused; nothing changed on either side. Allows receive, send.
    // Workers run.
    kRefused,
    // Ended: a failure or a cancel; the source keeps its state. Allows receive, send. Workers
    // run.
    kFailed,
    kCount
};

/// The session commands a phase may allow (migrate.status: always).
enum MigrateCommandBit : uint8_t {
    kAllowsReceive = 1 << 0,
    kAllowsSend = 1 << 1,
    kAllowsContinue = 1 << 2,
    kAllowsCancel = 1 << 3,
};

/// Where this side's workers are in a phase.
enum class PhaseWorkers : uint8_t {
    kRunning,  // forwarding
    kSlices,   // paused a slice of the tables at a time, briefly, forwarding between
    kPaused,   // paused (the blackout, on a source)
};

struct PhaseInfo {
    MigrationPhase phase;
    std::string_view name;  // as migrate.status prints it
    uint8_t allows;         // MigrateCommandBit
    PhaseWorkers workers;
};

inline constexpr uint8_t kAllowsStart = kAllowsReceive | kAllowsSend;

inline constexpr std::array<PhaseInfo, static_cast<size_t>(MigrationPhase::kCount)> kPhases = {{
    {MigrationPhase::kIdle, "idle", kAllowsStart, PhaseWorkers::kRunning},
    {MigrationPhase::kListening, "listening", kAllowsCancel, PhaseWorkers::kRunning},
    {MigrationPhase::kReceiving, "receiving", 0, PhaseWorkers::kRunning},
    {MigrationPhase::kStaging, "staging", 0, PhaseWorkers::kSlices},
    {MigrationPhase::kInstalling, "installing", 0, PhaseWorkers::kPaused},
    {MigrationPhase::kPrecopy, "precopy", 0, PhaseWorkers::kRunning},
    {MigrationPhase::kPrecopySent, "precopy_sent", 0, PhaseWorkers::kRunning},
    {MigrationPhase::kReady, "ready", kAllowsContinue | kAllowsCancel, PhaseWorkers::kRunning},
    {MigrationPhase::kContinuing, "continuing", 0, PhaseWorkers::kRunning},
    {MigrationPhase::kCancelling, "cancelling", 0, PhaseWorkers::kRunning},
    {MigrationPhase::kSending, "sending", 0, PhaseWorkers::kPaused},
    {MigrationPhase::kWaitingCommit, "waiting_commit", 0, PhaseWorkers::kPaused},
    {MigrationPhase::kResolving, "resolving", 0, PhaseWorkers::kPaused},
    {MigrationPhase::kCommitted, "committed", kAllowsStart, PhaseWorkers::kRunning},
    {MigrationPhase::kRefused, "refused", kAllowsStart, PhaseWorkers::kRunning},
    {MigrationPhase::kFailed, "failed", kAllowsStart, PhaseWorkers::kRunning},
}};

/// Each row sits at its phase's index. Context: compile time.
constexpr bool phases_in_order() {
    for (size_t i = 0; i < kPhases.size(); ++i)
        if (static_cast<size_t>(kPhases[i].phase) != i) return false;
    return true;
}
static_assert(phases_in_order(), "kPhases: one row per MigrationPhase, in enum order");

/// The phase's row. Context: any.
constexpr const PhaseInfo& phase_info(MigrationPhase p) {
    return kPhases[static_cast<size_t>(p)];
}
/// The phase's name as migrate.status prints it. Context: any.
constexpr std::string_view phase_name(MigrationPhase p) {
    return phase_info(p).name;
}
/// Whether phase p allows a session command (a MigrateCommandBit). Context: any.
constexpr bool phase_allows(MigrationPhase p, MigrateCommandBit c) {
    return (phase_info(p).allows & c) != 0;
}

}  // namespace ferry
