#include "migrate/session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <future>

#include "migrate/stages.h"
#include "migrate/stream_reader.h"
#include "migrate/stream_writer.h"
#include "migrate/transport.h"

namespace ferry {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kSendChunk = 1 << 20;
constexpr uint32_t kPrecopySlice = 8192;  // table slots read per brief pause during pre-copy
constexpr size_t kRetireSlice = 8192;     // connections retired per brief pause after a commit
constexpr uint32_t kStageSlice = 8192;    // connections a target places ahead per brief pause

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

constexpr auto kHandshakeTime = std::chrono::seconds(5);  // a peer's TLS handshake, at most
// A target answers questions about its stream's outcome this long after it ended (a new
// migration or the session's end closes its socket sooner); a source that did not hear the
// answer asks for this long.
constexpr auto kOutcomeLinger = std::chrono::seconds(30);
constexpr auto kOutcomeAsking = std::chrono::seconds(5);

/// Test only: FERRY_TEST_SLOW_TASK=NAME:MS makes the target's posted control-thread task NAME
/// (stage, install) wait MS ms (at most 10000) on the control thread before it starts, as a
/// busy control thread would. Unset (the default): no delay. Context: control.
void test_slow_task(const char* name) {
    const char* env = std::getenv("FERRY_TEST_SLOW_TASK");
    const char* colon = env ? std::strchr(env, ':') : nullptr;
    if (!colon || std::string(env, colon) != name) return;
    const long ms = std::clamp(std::strtol(colon + 1, nullptr, 10), 0L, 10000L);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

/// A phase's name as migrate.status prints it, as a string for json and logs.
std::string name_of(MigrationPhase p) {
    return std::string(phase_name(p));
}

Deadline deadline_in(double seconds) {
    return Clock::now() + std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

/// Lets the peer on fd in, or says why not, before anything is read from it: on a target's
/// unix socket its uid (this ferryd's or root), then, with credentials, TLS 1.3 with its
/// certificate checked (the handshake gets kHandshakeTime at most). Context: migration thread.
/// @return the channel to the peer, or kFailed with the reason
Result<std::unique_ptr<ByteChannel>> authenticate(int fd, bool unix_socket,
                                                  const ChannelSecurity& security, TlsRole role,
                                                  Deadline deadline) {
    if (unix_socket && role == TlsRole::kServer) {
        if (Status s = transport_check_peer_uid(fd); !s) return s.error();
    }
    if (!security.tls) return plain_channel(fd);
    auto ch = tls_handshake(fd, security.tls, role, security.peer,
                            std::min(deadline, Clock::now() + kHandshakeTime));
    if (!ch) return make_error(ErrorCode::kFailed, "refused the peer: " + ch.error().message);
    return ch;
}

}  // namespace

MigrationSession::~MigrationSession() {
    // Wake a migration thread blocked on its socket or held; it gives up and exits.
    if (listen_fd_ >= 0) shutdown(listen_fd_, SHUT_RDWR);
    const int fd = active_fd_.load();
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
    {
        std::lock_guard lock(mu_);
        abandoned_.store(true);
    }
    released_.notify_all();
    join();
    held_pause_.reset();
}

void MigrationSession::join() {
    // A finished target may still answer outcome questions: that ends now.
    if (listen_fd_ >= 0) shutdown(listen_fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) {
        close(listen_fd_);
        listen_fd_ = -1;
    }
}

bool MigrationSession::busy() const {
    std::lock_guard lock(mu_);
    return !phase_allows(st_.phase, kAllowsSend);
}

void MigrationSession::set_phase(MigrationPhase phase) {
    std::lock_guard lock(mu_);
    st_.phase = phase;
}

void MigrationSession::finish(MigrationPhase phase, const std::string& error) {
    std::lock_guard lock(mu_);
    st_.phase = phase;
    st_.error = error;
    st_.total_ms = ms_between(st_.started, Clock::now());
    if (error.empty())
        host_.log(MigrateLog::kInfo,
                  "migration (%s, %s): %s: %zu connections, %llu bytes, workers paused "
                  "%.1f ms, %.1f ms in all",
                  st_.role.c_str(), st_.address.c_str(), name_of(phase).c_str(), st_.connections,
                  static_cast<unsigned long long>(st_.stream_bytes), st_.pause_ms, st_.total_ms);
    else
        host_.log(MigrateLog::kWarn, "migration (%s, %s): %s: %s", st_.role.c_str(),
                  st_.address.c_str(), name_of(phase).c_str(), error.c_str());
}

Status MigrationSession::await_release(Deadline deadline) {
    const auto t = Clock::now();
    std::unique_lock lock(mu_);
    st_.phase = MigrationPhase::kReady;
    released_.wait_until(lock, deadline, [this] { return release_ != 0 || abandoned_.load(); });
    st_.steps_ms["held"] = ms_between(t, Clock::now());
    if (release_ > 0) return Ok{};
    if (release_ < 0) return make_error(ErrorCode::kFailed, "cancelled by migrate.cancel");
    return make_error(ErrorCode::kFailed, "held: no migrate.continue within timeout_s");
}

Result<json> MigrationSession::go_on(bool cancel) {
    {
        std::lock_guard lock(mu_);
        // The phase says what it allows: a target listening may be cancelled, a source held
        // in ready continued or cancelled (once).
        const bool allowed =
            phase_allows(st_.phase, cancel ? kAllowsCancel : kAllowsContinue) && release_ == 0;
        if (allowed && st_.phase == MigrationPhase::kListening) {
            // No source came: stop listening (the accept wakes up and gives up).
            release_ = -1;
            st_.phase = MigrationPhase::kCancelling;
            shutdown(listen_fd_, SHUT_RDWR);
            return json{{"phase", name_of(MigrationPhase::kCancelling)}};
        }
        if (!allowed)
            return make_error(ErrorCode::kBusy, cancel ? "no migration is held in phase ready or "
                                                         "listening"
                                                       : "no migration is held in phase ready");
        release_ = cancel ? -1 : 1;
        // No poll sees "ready" again.
        st_.phase = cancel ? MigrationPhase::kCancelling : MigrationPhase::kContinuing;
    }
    released_.notify_all();
    return json{
        {"phase", name_of(cancel ? MigrationPhase::kCancelling : MigrationPhase::kContinuing)}};
}

json MigrationSession::status() const {
    std::lock_guard lock(mu_);
    if (st_.role.empty()) return json{{"phase", name_of(MigrationPhase::kIdle)}};
    const double elapsed = st_.total_ms > 0 ? st_.total_ms : ms_between(st_.started, Clock::now());
    json j{{"role", st_.role},
           {"phase", name_of(st_.phase)},
           {"address", st_.address},
           {"stream_bytes", st_.stream_bytes},
           {"bytes_done", st_.bytes_done},
           {"sections", st_.sections},
           {"connections", st_.connections},
           {"dpi_streams", st_.dpi_streams},
           {"macs", st_.macs},
           {"pause_ms", st_.pause_ms},
           {"delta_connections", st_.delta_connections},
           {"gone", st_.gone},
           {"elapsed_ms", elapsed},
           {"steps_ms", st_.steps_ms}};
    if (!st_.port.empty()) j["port"] = st_.port;
    if (!st_.error.empty()) j["error"] = st_.error;
    return j;
}

Result<json> MigrationSession::receive(const std::string& address, double timeout_s,
                                       ChannelSecurity security) {
    if (busy()) return make_error(ErrorCode::kBusy, "a migration is in progress");
    join();
    auto fd = transport_listen(address);
    if (!fd) return fd.error();
    listen_fd_ = *fd;
    limits_ = MigrationControl(host_).stream_limits();
    {
        std::lock_guard lock(mu_);
        st_ = Progress{};
        st_.role = "target";
        st_.phase = MigrationPhase::kListening;
        committed_stream_.reset();
        st_.address = transport_local_address(listen_fd_, address);
        st_.started = Clock::now();
        release_ = 0;
    }
    if (address.rfind("tcp-insecure:", 0) == 0)
        host_.log(MigrateLog::kWarn,
                  "migration: listening at %s in clear with no authentication (tcp-insecure:): "
                  "anyone who reaches it can write connections and NAT bindings into this ferryd",
                  status()["address"].get<std::string>().c_str());
    const Deadline deadline = deadline_in(timeout_s);
    thread_ = std::thread(
        [this, deadline, security = std::move(security)] { run_target(deadline, security); });
    return json{{"phase", name_of(MigrationPhase::kListening)}, {"address", status()["address"]}};
}

void MigrationSession::run_target(Deadline deadline, const ChannelSecurity& security) {
    const bool unix_socket = status()["address"].get<std::string>().rfind("unix:", 0) == 0;
    // Sources are let in one at a time; one that is refused (its uid, its certificate) is
    // closed before a byte of it is read, and the next one may come until the deadline.
    for (;;) {
        auto conn = transport_accept(listen_fd_, deadline);
        bool cancelled = false;
        {
            std::lock_guard lock(mu_);
            cancelled = release_ < 0;
        }
        if (!conn || cancelled) {
            if (conn) close(*conn);
            finish(MigrationPhase::kFailed,
                   cancelled ? "cancelled by migrate.cancel" : conn.error().message);
            return;
        }
        active_fd_.store(*conn);
        std::unique_ptr<ByteChannel> ch;
        try {
            auto in = authenticate(*conn, unix_socket, security, TlsRole::kServer, deadline);
            if (in) {
                ch = std::move(*in);
            } else {
                host_.log(MigrateLog::kWarn, "migration (target): %s", in.error().message.c_str());
            }
            bool cancelled_meanwhile = false;
            {
                std::lock_guard lock(mu_);
                cancelled_meanwhile = release_ < 0;  // migrate.cancel during the handshake
            }
            if (ch && cancelled_meanwhile) {
                ch.reset();
                active_fd_.store(-1);
                close(*conn);
                finish(MigrationPhase::kFailed, "cancelled by migrate.cancel");
                return;
            }
            if (ch) receive_stream(*ch, deadline);
        } catch (const std::exception& e) {
            // Thrown while letting the peer in (receive_stream handles its own): refused.
            ch.reset();
            active_fd_.store(-1);
            close(*conn);
            finish(MigrationPhase::kRefused, std::string("internal error: ") + e.what());
            return;
        }
        const bool done = ch != nullptr;
        ch.reset();  // TLS: close_notify before the socket goes
        active_fd_.store(-1);
        close(*conn);
        if (done) return answer_outcome_queries(security, unix_socket);
    }
}

void MigrationSession::answer_outcome_queries(const ChannelSecurity& security, bool unix_socket) {
    const Deadline until = Clock::now() + kOutcomeLinger;
    std::optional<uint64_t> committed;
    {
        std::lock_guard lock(mu_);
        committed = committed_stream_;
    }
    while (!abandoned_.load()) {
        auto conn = transport_accept(listen_fd_, until);
        if (!conn) return;  // the time is up, or join() shut the socket
        active_fd_.store(*conn);
        try {
            const Deadline by = std::min(until, Clock::now() + kHandshakeTime);
            auto ch = authenticate(*conn, unix_socket, security, TlsRole::kServer, by);
            auto asked = ch ? transport_read_outcome_query(**ch, by) : Result<uint64_t>(ch.error());
            if (asked) {
                const bool yes = committed && *committed == *asked;
                transport_send_answer(
                    **ch, StreamAnswer{yes, *asked, yes ? "" : "not installed here"}, by);
                host_.log(MigrateLog::kInfo, "migration (target): told a source its stream was %s",
                          yes ? "committed" : "not installed");
            } else {
                host_.log(MigrateLog::kWarn, "migration (target): after the stream: %s",
                          asked.error().message.c_str());
            }
        } catch (const std::exception& e) {
            host_.log(MigrateLog::kWarn, "migration (target): after the stream: %s", e.what());
        }
        active_fd_.store(-1);
        close(*conn);
    }
}

Result<StreamAnswer> MigrationSession::ask_outcome(const std::string& address,
                                                   const ChannelSecurity& security,
                                                   uint64_t stream_id) {
    set_phase(MigrationPhase::kResolving);
    const Deadline until = Clock::now() + kOutcomeAsking;
    std::string why = "no answer";
    while (Clock::now() < until && !abandoned_.load()) {
        auto fd = transport_connect(address, until);
        if (!fd) {
            why = fd.error().message;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            continue;
        }
        active_fd_.store(*fd);
        Result<StreamAnswer> a = make_error(ErrorCode::kFailed, "not asked");
        try {
            auto ch = authenticate(*fd, false, security, TlsRole::kClient, until);
            if (!ch) {
                a = ch.error();
            } else if (Status q = transport_send_outcome_query(**ch, stream_id, until); !q) {
                a = q.error();
            } else {
                a = transport_read_answer(**ch, until);
            }
        } catch (const std::exception& e) {
            a = make_error(ErrorCode::kFailed, e.what());
        }
        active_fd_.store(-1);
        close(*fd);
        if (a && a->stream_id == stream_id) return a;
        why = a ? "an answer about another stream" : a.error().message;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return make_error(ErrorCode::kFailed, "the outcome is unknown (asked the target: " + why +
                                              "); the connections stay here too");
}

void MigrationSession::receive_stream(ByteChannel& ch, Deadline deadline) {
    // Only the control thread's tasks touch job (they capture it), never this thread.
    auto job = std::make_shared<TargetStaging>();
    auto unstage = [&host = host_, job] {
        host.post([&host, job] {
            if (!job->staged) return;
            if (!MigrationControl(host).unstage(*job->staged, kStageSlice))
                host.log(MigrateLog::kError,
                         "migration (target): the workers did not pause: connections placed ahead "
                         "stay dormant");
            job->staged.reset();
        });
    };
    try {
        receive_into(ch, deadline, job, unstage);
    } catch (const std::exception& e) {
        const std::string why = std::string("internal error: ") + e.what();
        unstage();
        transport_send_answer(ch, StreamAnswer{false, 0, why}, deadline_in(2));
        finish(MigrationPhase::kRefused, why);
    }
}

void MigrationSession::receive_into(ByteChannel& ch, Deadline deadline,
                                    const std::shared_ptr<TargetStaging>& job,
                                    const std::function<void()>& unstage) {
    set_phase(MigrationPhase::kReceiving);
    const auto t_recv = Clock::now();
    // Sections are decoded as they arrive: what remains after the trailer is the delta.
    // With a pre-copy, its connections are placed ahead (dormant) before READY.
    auto reader = std::make_shared<StreamReader>(limits_);
    uint32_t first_delta_entry = 0;
    bool have_header = false;
    double decode_ms = 0;
    // A task for the control thread, claimed by whoever comes first: the control thread,
    // which then runs it to the end, or this thread at the deadline, after which the task
    // never runs. So nothing a migration that gave up posted can act later (stage dormant
    // entries no one removes, install what the source was told is refused).
    // @return the task's result, or nothing when it was given up
    auto on_control = [this, deadline](const char* name, auto task) {
        using R = decltype(task());
        enum : int { kPosted, kRunning, kGivenUp };
        auto claim = std::make_shared<std::atomic<int>>(kPosted);
        auto done = std::make_shared<std::promise<R>>();
        std::future<R> f = done->get_future();
        host_.post([name, task, done, claim] {
            test_slow_task(name);
            int posted = kPosted;
            // seq_cst: exactly one of this exchange and the give-up exchange below wins.
            if (!claim->compare_exchange_strong(posted, kRunning)) return;
            try {
                done->set_value(task());
            } catch (...) {
                done->set_exception(std::current_exception());
            }
        });
        while (f.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready &&
               Clock::now() < deadline && !abandoned_.load()) {
        }
        if (f.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
            int posted = kPosted;
            if (claim->compare_exchange_strong(posted, kGivenUp)) return std::optional<R>();
            // Running: its outcome stands; it ends within the pause timeout and its work.
            f.wait();
        }
        return std::optional<R>(f.get());  // rethrows the task's exception: a refusal
    };
    auto bytes = transport_read_stream(
        ch, deadline, limits_.bytes,
        [&](const uint8_t* stream, size_t offset, size_t length) -> ferry::Status {
            const auto t = Clock::now();
            if (!have_header) {
                auto h = reader->header(stream, offset);
                if (!h) return h.error();
                have_header = true;
            }
            auto used = reader->section(stream + offset, length, offset);
            decode_ms += ms_between(t, Clock::now());
            {
                std::lock_guard lock(mu_);
                st_.bytes_done = offset + length;
                st_.stream_bytes = offset + length;
                ++st_.sections;
            }
            if (!used) return used.error();
            const uint16_t type = static_cast<uint16_t>(stream[offset] << 8 | stream[offset + 1]);
            if (type != static_cast<uint16_t>(SectionType::kPrecopyEnd)) return Ok{};
            // The pre-copy is decoded: place it, then let the source pause its workers.
            set_phase(MigrationPhase::kStaging);
            const auto t_stage = Clock::now();
            auto r = on_control("stage", [&host = host_, reader, job]() -> Status {
                auto st = MigrationControl(host).stage(reader->partial(), kStageSlice);
                if (!st) return st.error();
                job->staged = std::move(*st);
                return Ok{};
            });
            if (!r) return make_error(ErrorCode::kInvalidParams, "staging timed out");
            if (!*r) return make_error(ErrorCode::kInvalidParams, r->error().message);
            first_delta_entry = reader->context().entries;
            {
                std::lock_guard lock(mu_);
                st_.steps_ms["stage_ahead"] = ms_between(t_stage, Clock::now());
                st_.phase = MigrationPhase::kReceiving;
            }
            return transport_send_ready(ch, deadline);
        });
    auto refuse = [&](const std::string& why) {
        unstage();
        transport_send_answer(ch, StreamAnswer{false, 0, why}, deadline_in(2));
        finish(MigrationPhase::kRefused, why);
    };
    if (!bytes) {
        if (bytes.error().code == ErrorCode::kInvalidParams) return refuse(bytes.error().message);
        unstage();
        finish(MigrationPhase::kFailed, bytes.error().message);
        return;
    }
    if (Status complete = reader->check_complete(); !complete)
        return refuse(complete.error().message);
    {
        const MigrationState& part = reader->partial();
        std::lock_guard lock(mu_);
        st_.steps_ms["receive"] = ms_between(t_recv, Clock::now());
        st_.steps_ms["decode_while_receiving"] = decode_ms;
        st_.connections = part.connections.size();
        st_.dpi_streams = part.dpi.size();
        st_.macs = part.macs.size();
        st_.phase = MigrationPhase::kInstalling;
    }
    const uint64_t stream_id = reader->partial().stream_id;
    // The control thread installs (it owns the tables and the pause); this thread waits.
    auto r =
        on_control("install", [this, reader, job, first_delta_entry]() -> Result<InstallReport> {
            const auto t0 = Clock::now();
            ScopedPause paused(host_.workers());
            if (!paused) return paused.status().error();
            const auto t_paused = Clock::now();
            MigrationControl mc(host_);
            Result<InstallReport> out = make_error(ErrorCode::kFailed, "not installed");
            if (job->staged) {
                out = mc.commit_staged(*job->staged, reader->partial(), reader->context(),
                                       first_delta_entry);
                job->staged.reset();  // committed, or removed on failure
            } else {
                auto whole = reader->finish();
                out = whole ? mc.install(*whole) : Result<InstallReport>(whole.error());
            }
            const auto t_installed = Clock::now();
            paused.release();
            std::lock_guard lock(mu_);
            st_.pause_ms = ms_between(t0, Clock::now());
            st_.steps_ms["pause"] = ms_between(t0, t_paused);
            st_.steps_ms["install"] = ms_between(t_paused, t_installed);
            return out;
        });
    if (!r) return refuse("the target did not install the state in time");
    if (!*r) return refuse(r->error().message);
    {
        // Before the answer: a source that does not hear it asks, and is told the same.
        std::lock_guard lock(mu_);
        committed_stream_ = stream_id;
    }
    const Status sent = transport_send_answer(ch, StreamAnswer{true, stream_id, ""}, deadline);
    // The state is installed either way; a lost answer leaves the source as it was, and
    // its copies of the connections expire there.
    finish(MigrationPhase::kCommitted, sent ? "" : "commit not delivered: " + sent.error().message);
}

Result<json> MigrationSession::send(const std::string& address,
                                    const std::optional<std::string>& port, double timeout_s,
                                    bool precopy, double settle_s, bool hold,
                                    ChannelSecurity security) {
    if (busy()) return make_error(ErrorCode::kBusy, "a migration is in progress");
    if (hold && !precopy) return make_error(ErrorCode::kInvalidParams, "hold needs precopy");
    join();
    const auto t0 = Clock::now();
    MigrationControl mc(host_);
    // What goes out: `first` now; with pre-copy, the rest (changes, trailer) once the
    // workers are paused, which the control thread does when `first` has been sent.
    auto moved = std::make_shared<MigrationState>();  // everything sent, for retire()
    // With pre-copy: the connections sent again with the workers paused (retired too).
    auto late = std::make_shared<std::vector<MigratedConnection>>();
    auto first = std::make_shared<std::vector<uint8_t>>();
    std::shared_ptr<Precopy> pre;
    std::shared_ptr<StreamWriter> writer;
    auto buffer = std::make_shared<std::vector<uint8_t>>();
    if (precopy) {
        auto p = mc.precopy(port, kPrecopySlice);
        if (!p) return p.error();
        pre = std::make_shared<Precopy>(std::move(*p));
        writer = std::make_shared<StreamWriter>(*buffer, pre->state);
        write_sections(*writer, pre->state, false);  // ports, connections, DPI streams
        writer->precopy_end();
        *first = writer->take();
        moved->connections = pre->state.connections;
        moved->stream_id = pre->state.stream_id;
    } else {
        auto paused = std::make_unique<ScopedPause>(host_.workers());
        if (!*paused) return paused->status().error();
        paused_at_ = Clock::now();  // the blackout: from the workers parked to their resume
        auto captured = mc.capture(port);
        if (!captured) return captured.error();  // the workers resume with paused
        held_pause_ = std::move(paused);         // until the answer
        *moved = std::move(*captured);
        *first = write_stream(*moved);
    }
    const auto t_ready = Clock::now();
    {
        std::lock_guard lock(mu_);
        st_ = Progress{};
        st_.steps_ms[precopy ? "precopy_capture" : "capture"] = ms_between(t0, t_ready);
        st_.role = "source";
        st_.phase = precopy ? MigrationPhase::kPrecopy : MigrationPhase::kSending;
        st_.address = address;
        st_.port = port.value_or("");
        st_.stream_bytes = first->size();
        st_.connections = moved->connections.size();
        st_.dpi_streams = precopy ? pre->state.dpi.size() : moved->dpi.size();
        st_.macs = moved->macs.size();
        st_.started = t0;
        release_ = 0;
    }
    if (address.rfind("tcp-insecure:", 0) == 0)
        host_.log(MigrateLog::kWarn,
                  "migration: sending to %s in clear with no authentication (tcp-insecure:): the "
                  "state can be read and altered on the way, and the target is not checked",
                  address.c_str());
    const Deadline deadline = deadline_in(timeout_s);
    thread_ = std::thread([this, moved, late, first, pre, writer, buffer, address, deadline,
                           settle_s, hold, security = std::move(security)] {
        const auto t_thread = Clock::now();
        Result<StreamAnswer> answer = make_error(ErrorCode::kFailed, "not sent");
        auto send_all = [&](ByteChannel& ch, const std::vector<uint8_t>& part, uint64_t done) {
            Status sent = Ok{};
            for (size_t at = 0; at < part.size() && sent; at += kSendChunk) {
                const size_t n = std::min(kSendChunk, part.size() - at);
                sent = transport_send(ch, part.data() + at, n, deadline);
                std::lock_guard lock(mu_);
                st_.bytes_done = done + at + n;
            }
            return sent;
        };
        auto fd = transport_connect(address, deadline);
        std::unique_ptr<ByteChannel> ch;
        if (fd) {
            active_fd_.store(*fd);
            auto out = authenticate(*fd, false, security, TlsRole::kClient, deadline);
            if (out)
                ch = std::move(*out);
            else
                answer = out.error();
        } else {
            answer = fd.error();
        }
        {
            // Connecting and, over TLS, the handshake: inside the blackout without pre-copy.
            std::lock_guard lock(mu_);
            st_.steps_ms["connect"] = ms_between(t_thread, Clock::now());
        }
        // Every exception here becomes a failure: the workers resume below as on any other.
        if (ch) {
            try {
                Status sent = send_all(*ch, *first, 0);
                if (sent && pre) {
                    set_phase(MigrationPhase::kPrecopySent);
                    sent = transport_await_ready(*ch, deadline);
                    if (sent && settle_s > 0)  // traffic goes on meanwhile: more changes to send
                        std::this_thread::sleep_until(std::min(
                            deadline, Clock::now() + std::chrono::microseconds(
                                                         static_cast<int64_t>(settle_s * 1e6))));
                    if (sent && hold) sent = await_release(deadline);
                }
                if (sent && pre) {
                    // The changes since the pre-copy, computed by the control thread with the
                    // workers paused from now until the answer.
                    auto rest = std::make_shared<std::promise<std::vector<uint8_t>>>();
                    std::future<std::vector<uint8_t>> rest_bytes = rest->get_future();
                    host_.post([this, pre, writer, late, rest] {
                        const auto t_pause = Clock::now();
                        auto paused = std::make_unique<ScopedPause>(host_.workers());
                        if (!*paused) {
                            rest->set_value({});
                            return;
                        }
                        held_pause_ = std::move(paused);  // until the answer
                        const auto t_paused = Clock::now();
                        paused_at_ = t_paused;  // the blackout starts when the workers are parked
                        MigrationState d = MigrationControl(host_).delta(*pre);
                        const auto t_delta = Clock::now();
                        // The delta writer: the format table's write column, without ports.
                        write_sections(*writer, d, true);
                        writer->finish();
                        // Appended to what retire() walks only after the workers resume:
                        // growing that vector here could copy every pre-copied connection.
                        *late = std::move(d.connections);
                        std::lock_guard lock(mu_);
                        st_.phase = MigrationPhase::kSending;
                        st_.steps_ms["pause"] = ms_between(t_pause, t_paused);
                        st_.steps_ms["delta"] = ms_between(t_paused, t_delta);
                        st_.steps_ms["encode_delta"] = ms_between(t_delta, Clock::now());
                        st_.delta_connections = late->size();
                        st_.gone = d.gone.size();
                        rest->set_value(writer->take());
                    });
                    if (rest_bytes.wait_until(deadline) != std::future_status::ready) {
                        sent = make_error(ErrorCode::kFailed, "the workers did not pause in time");
                    } else {
                        std::vector<uint8_t> part = rest_bytes.get();
                        if (part.empty()) {
                            sent =
                                make_error(ErrorCode::kBusy, "the workers did not pause in time");
                        } else {
                            {
                                std::lock_guard lock(mu_);
                                st_.stream_bytes = first->size() + part.size();
                            }
                            sent = send_all(*ch, part, first->size());
                        }
                    }
                }
                const auto t_sent = Clock::now();
                if (!sent) {
                    answer = sent.error();
                } else {
                    set_phase(MigrationPhase::kWaitingCommit);
                    answer = transport_read_answer(*ch, deadline);
                    if (!answer) {
                        // Lost or late: the target may have installed it all the same. The
                        // workers stay paused until the target says which.
                        host_.log(MigrateLog::kWarn, "migration (source): %s; asking the target",
                                  answer.error().message.c_str());
                        answer = ask_outcome(address, security, moved->stream_id);
                    }
                }
                std::lock_guard lock(mu_);
                st_.steps_ms["send"] = ms_between(t_thread, t_sent);
                st_.steps_ms["wait_commit"] = ms_between(t_sent, Clock::now());
            } catch (const std::exception& e) {
                answer = make_error(ErrorCode::kFailed, std::string("internal error: ") + e.what());
            }
        }
        ch.reset();  // TLS: close_notify before the socket goes
        if (fd) {
            active_fd_.store(-1);
            close(*fd);
        }
        if (abandoned_.load()) return;
        host_.post([this, moved, late, answer] {
            const bool committed =
                answer && answer->commit && answer->stream_id == moved->stream_id;
            if (held_pause_) {
                held_pause_.reset();
                std::lock_guard lock(mu_);
                st_.pause_ms = ms_between(paused_at_, Clock::now());
            }
            moved->connections.insert(moved->connections.end(), late->begin(), late->end());
            // The moved connections are retired after the workers resumed, a slice per brief
            // pause: the VM that used them is gone, so nothing depends on them any more.
            const auto t_retire = Clock::now();
            MigrationControl mc(host_);
            size_t at = 0;
            for (int refused = 0; committed && at < moved->connections.size();) {
                ScopedPause paused(host_.workers());
                if (!paused) {
                    if (++refused == 10) break;  // stuck workers: the rest expire there
                    continue;
                }
                mc.retire(*moved, at, kRetireSlice);
                at += kRetireSlice;
            }
            if (committed && at < moved->connections.size())
                host_.log(MigrateLog::kWarn,
                          "migration: %zu moved connections not retired (the workers did "
                          "not pause); they expire here",
                          moved->connections.size() - at);
            {
                std::lock_guard lock(mu_);
                st_.steps_ms["retire_after_resume"] = ms_between(t_retire, Clock::now());
            }
            if (committed)
                finish(MigrationPhase::kCommitted, "");
            else if (answer && !answer->commit)
                finish(MigrationPhase::kRefused, "the target refused: " + answer->message);
            else if (answer)
                finish(MigrationPhase::kFailed, "the target answered another stream");
            else
                finish(MigrationPhase::kFailed, answer.error().message);
        });
    });
    return json{{"phase", name_of(precopy ? MigrationPhase::kPrecopy : MigrationPhase::kSending)},
                {"address", address},
                {"stream_bytes", first->size()},
                {"connections", moved->connections.size()},
                {"precopy", precopy}};
}

}  // namespace ferry
