// One live migration at a time, either side, over a unix or TCP socket:
//   target (migrate.receive): listen; a migration thread accepts one source, reads and checks
//     the stream into shadow state; the control thread pauses the workers, installs it (all or
//     nothing), resumes them; the thread answers commit or refusal.
//   source (migrate.send): the control thread pauses the workers at a safe point, captures the
//     port's or the switch's state and keeps the workers paused; a migration thread sends the
//     stream and waits for the answer; on commit the control thread retires the moved state,
//     on a refusal, a lost connection or a timeout it changes nothing; then the workers resume.
// migrate.status reports the phase and progress. Context: control thread, plus the one
// migration thread, which touches only the socket and the status (under its mutex).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "control/command_table.h"
#include "control/result.h"
#include "migrate/migration_state.h"

namespace ferry {

class Switch;

class MigrationSession {
public:
    explicit MigrationSession(Switch& sw) : sw_(sw) {}
    ~MigrationSession();
    MigrationSession(const MigrationSession&) = delete;
    MigrationSession& operator=(const MigrationSession&) = delete;

    /// Listens at address for one incoming stream. @return {listening: address} or kBusy /
    ///         kInvalidParams / kFailed
    Result<nlohmann::json> receive(const std::string& address, double timeout_s);
    /// Sends one port's state (or the switch's) to a target listening at address; the
    /// workers stay paused until the answer. @return {phase, bytes, connections, ...} at once
    /// With hold (and precopy), the source waits in phase "ready" after the target took the
    /// pre-copy until go_on() says continue or cancel, or timeout_s runs out.
    Result<nlohmann::json> send(const std::string& address, const std::optional<std::string>& port,
                                double timeout_s, bool precopy, double settle_s = 0,
                                bool hold = false);
    /// A held source: continue (pause the workers, send what changed, wait for the commit) or
    /// cancel (the target drops the pre-copy; nothing changes here). Cancel also stops a target
    /// still listening. @return {phase} or kBusy when no migration waits so
    Result<nlohmann::json> go_on(bool cancel);
    nlohmann::json status() const;

private:
    struct Progress {
        std::string role;   // "source", "target", "" (none yet)
        std::string phase;  // idle listening receiving installing capturing precopy
                            // precopy_sent ready sending waiting_commit committed refused
                            // failed
        std::string address;
        std::string port;
        uint64_t stream_bytes = 0;
        uint64_t bytes_done = 0;
        uint32_t sections = 0;
        size_t connections = 0;
        size_t dpi_streams = 0;
        size_t macs = 0;
        std::string error;
        double pause_ms = 0;           // workers paused on this side
        size_t delta_connections = 0;  // pre-copy: connections sent again with the workers paused
        size_t gone = 0;               // pre-copy: connections that ended meanwhile
        std::map<std::string, double> steps_ms;  // where the time went, step by step
        double total_ms = 0;
        std::chrono::steady_clock::time_point started{};
    };
    bool busy() const;
    /// A held source's migration thread: waits for go_on() or the deadline. Ok to continue.
    Status await_release(std::chrono::steady_clock::time_point deadline);
    void set_phase(const std::string& phase);
    void finish(const std::string& phase, const std::string& error);
    void join();

    Switch& sw_;
    mutable std::mutex mu_;  // guards st_ (the migration thread updates progress)
    Progress st_;
    std::thread thread_;
    int listen_fd_ = -1;
    std::atomic<int> active_fd_{-1};      // the migration thread's connection
    std::atomic<bool> abandoned_{false};  // the session is going away: post nothing more
    std::condition_variable released_;    // a held source: go_on() or the session's end
    int release_ = 0;                     // under mu_: 1 continue, -1 cancel, 0 not yet
    bool holding_pause_ = false;          // source: the workers are paused for this migration
    std::chrono::steady_clock::time_point paused_at_{};
};

/// The migrate.send / migrate.receive / migrate.status rows. Context: control.
void add_migrate_session_commands(std::vector<CommandSpec>& t, Switch& sw);

}  // namespace ferry
