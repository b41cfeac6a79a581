// One live migration at a time, either side, over a unix socket or TCP (TLS, or in clear when
// the operator says tcp-insecure:):
//   target (migrate.receive): listen; a migration thread accepts sources until one is let in
//     (unix: its uid; TLS: its certificate), refusing the others before reading a byte of
//     them, then reads and checks the stream into shadow state; the control thread pauses the
//     workers, installs it (all or nothing), resumes them; the thread answers commit or
//     refusal.
//   source (migrate.send): the control thread pauses the workers at a safe point, captures the
//     port's or the switch's state and keeps the workers paused; a migration thread connects
//     (TLS: checks the target's certificate), sends the stream and waits for the answer; on
//     commit the control thread retires the moved state, on a refusal, a lost connection or a
//     timeout it changes nothing; then the workers resume.
// migrate.status reports the phase (migrate/phase.h: what each allows, whether the workers are
// paused) and progress. The switch is seen through a MigrationHost (migrate/host.h). Context:
// control thread, plus the one migration thread, which touches only the socket and the status
// (under its mutex) and posts the rest to the control thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "dataplane/result.h"
#include "migrate/host.h"
#include "migrate/migration_state.h"
#include "migrate/phase.h"
#include "migrate/stages.h"
#include "migrate/tls_channel.h"
#include "migrate/transport.h"

namespace ferry {

/// Who may be at the other end of a migration's channel. A target always takes a unix peer
/// only of its own uid or root; with credentials, either end also runs TLS 1.3 and requires
/// the peer's certificate to chain to the CA and to carry `peer`.
struct ChannelSecurity {
    std::shared_ptr<const TlsCredentials> tls;  // null: a plain socket (unix:, tcp-insecure:)
    std::string peer;                           // the name the peer's certificate must carry
};

class MigrationSession {
public:
    explicit MigrationSession(MigrationHost& host) : host_(host) {}
    ~MigrationSession();
    MigrationSession(const MigrationSession&) = delete;
    MigrationSession& operator=(const MigrationSession&) = delete;

    /// Listens at address for one incoming stream. @return {listening: address} or kBusy /
    ///         kInvalidParams / kFailed
    Result<nlohmann::json> receive(const std::string& address, double timeout_s,
                                   ChannelSecurity security = {});
    /// Sends one port's state (or the switch's) to a target listening at address; the
    /// workers stay paused until the answer. @return {phase, bytes, connections, ...} at once
    /// With hold (and precopy), the source waits in phase "ready" after the target took the
    /// pre-copy until go_on() says continue or cancel, or timeout_s runs out.
    Result<nlohmann::json> send(const std::string& address, const std::optional<std::string>& port,
                                double timeout_s, bool precopy, double settle_s = 0,
                                bool hold = false, ChannelSecurity security = {});
    /// A held source: continue (pause the workers, send what changed, wait for the commit) or
    /// cancel (the target drops the pre-copy; nothing changes here). Cancel also stops a target
    /// still listening. @return {phase} or kBusy when no migration waits so
    Result<nlohmann::json> go_on(bool cancel);
    nlohmann::json status() const;

private:
    struct Progress {
        std::string role;  // "source", "target", "" (none yet)
        MigrationPhase phase = MigrationPhase::kIdle;
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
    /// The target's migration thread: accepts sources until one is let in (its uid, its
    /// certificate), reads, checks and installs its stream, answers. Throws nothing it does
    /// not turn into a refusal.
    void run_target(Deadline deadline, const ChannelSecurity& security);
    /// The target's side once a source is let in: reads, checks and installs its stream
    /// from ch and answers; an exception becomes a refusal (what was placed ahead removed).
    void receive_stream(ByteChannel& ch, Deadline deadline);
    /// What a target placed ahead of the commit; only the control thread's tasks touch it.
    struct TargetStaging {
        std::optional<Staged> staged;
    };
    /// receive_stream's work; job holds what a pre-copy placed ahead, unstage posts its
    /// removal to the control thread.
    void receive_into(ByteChannel& ch, Deadline deadline, const std::shared_ptr<TargetStaging>& job,
                      const std::function<void()>& unstage);
    /// A target after its stream: answers sources asking what became of it (committed or
    /// not) until kOutcomeLinger passes or join() shuts the listening socket.
    /// Context: migration thread.
    void answer_outcome_queries(const ChannelSecurity& security, bool unix_socket);
    /// A source that sent everything but heard no answer asks the target, on new
    /// connections, for a few seconds. Context: migration thread.
    /// @return the target's answer about stream_id, or kFailed: the outcome is unknown
    Result<StreamAnswer> ask_outcome(const std::string& address, const ChannelSecurity& security,
                                     uint64_t stream_id);
    /// A held source's migration thread: waits for go_on() or the deadline. Ok to continue.
    Status await_release(std::chrono::steady_clock::time_point deadline);
    void set_phase(MigrationPhase phase);
    void finish(MigrationPhase phase, const std::string& error);
    void join();

    MigrationHost& host_;
    mutable std::mutex mu_;  // guards st_ (the migration thread updates progress)
    Progress st_;
    std::thread thread_;
    int listen_fd_ = -1;
    StreamLimits limits_;             // of the stream being received: set before its thread starts
    std::atomic<int> active_fd_{-1};  // the migration thread's connection
    std::atomic<bool> abandoned_{false};  // the session is going away: post nothing more
    std::condition_variable released_;    // a held source: go_on() or the session's end
    int release_ = 0;                     // under mu_: 1 continue, -1 cancel, 0 not yet
    std::chrono::steady_clock::time_point paused_at_{};
    // Source, control thread: the workers paused for this migration, until the answer.
    std::unique_ptr<ScopedPause> held_pause_;
    // Under mu_: the stream this target installed, to tell a source that asks.
    std::optional<uint64_t> committed_stream_;
};

}  // namespace ferry
