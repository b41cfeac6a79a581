#include "control/migration_session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <future>

#include "control/log.h"
#include "control/migration.h"
#include "control/switch.h"
#include "migrate/stream_reader.h"
#include "migrate/stream_writer.h"
#include "migrate/transport.h"

namespace ferry {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxStreamBytes = size_t{4} << 30;
constexpr size_t kSendChunk = 1 << 20;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

Deadline deadline_in(double seconds) {
    return Clock::now() + std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

}  // namespace

MigrationSession::~MigrationSession() {
    // Wake a migration thread blocked on its socket; it gives up and exits.
    if (listen_fd_ >= 0) shutdown(listen_fd_, SHUT_RDWR);
    const int fd = active_fd_.load();
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
    abandoned_.store(true);
    join();
    if (holding_pause_) sw_.resume();
}

void MigrationSession::join() {
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) {
        close(listen_fd_);
        listen_fd_ = -1;
    }
}

bool MigrationSession::busy() const {
    std::lock_guard lock(mu_);
    return st_.phase != "" && st_.phase != "idle" && st_.phase != "committed" &&
           st_.phase != "refused" && st_.phase != "failed";
}

void MigrationSession::set_phase(const std::string& phase) {
    std::lock_guard lock(mu_);
    st_.phase = phase;
}

void MigrationSession::finish(const std::string& phase, const std::string& error) {
    std::lock_guard lock(mu_);
    st_.phase = phase;
    st_.error = error;
    st_.total_ms = ms_between(st_.started, Clock::now());
    if (error.empty())
        FERRY_LOG_INFO(
            "migration (%s, %s): %s: %zu connections, %llu bytes, workers paused "
            "%.1f ms, %.1f ms in all",
            st_.role.c_str(), st_.address.c_str(), phase.c_str(), st_.connections,
            static_cast<unsigned long long>(st_.stream_bytes), st_.pause_ms, st_.total_ms);
    else
        FERRY_LOG_WARN("migration (%s, %s): %s: %s", st_.role.c_str(), st_.address.c_str(),
                       phase.c_str(), error.c_str());
}

json MigrationSession::status() const {
    std::lock_guard lock(mu_);
    if (st_.role.empty()) return json{{"phase", "idle"}};
    const double elapsed = st_.total_ms > 0 ? st_.total_ms : ms_between(st_.started, Clock::now());
    json j{{"role", st_.role},
           {"phase", st_.phase},
           {"address", st_.address},
           {"stream_bytes", st_.stream_bytes},
           {"bytes_done", st_.bytes_done},
           {"sections", st_.sections},
           {"connections", st_.connections},
           {"dpi_streams", st_.dpi_streams},
           {"macs", st_.macs},
           {"pause_ms", st_.pause_ms},
           {"elapsed_ms", elapsed},
           {"steps_ms", st_.steps_ms}};
    if (!st_.port.empty()) j["port"] = st_.port;
    if (!st_.error.empty()) j["error"] = st_.error;
    return j;
}

Result<json> MigrationSession::receive(const std::string& address, double timeout_s) {
    if (busy()) return make_error(ErrorCode::kBusy, "a migration is in progress");
    join();
    auto fd = transport_listen(address);
    if (!fd) return fd.error();
    listen_fd_ = *fd;
    {
        std::lock_guard lock(mu_);
        st_ = Progress{};
        st_.role = "target";
        st_.phase = "listening";
        st_.address = transport_local_address(listen_fd_, address);
        st_.started = Clock::now();
    }
    const Deadline deadline = deadline_in(timeout_s);
    thread_ = std::thread([this, deadline] {
        auto conn = transport_accept(listen_fd_, deadline);
        if (!conn) {
            finish("failed", conn.error().message);
            return;
        }
        active_fd_.store(*conn);
        set_phase("receiving");
        const auto t_recv = Clock::now();
        // Sections are decoded as they arrive: what remains after the trailer is the delta.
        StreamReader reader;
        bool have_header = false;
        double decode_ms = 0;
        auto bytes = transport_read_stream(
            *conn, deadline, kMaxStreamBytes,
            [&](const uint8_t* stream, size_t offset, size_t length) -> ferry::Status {
                const auto t = Clock::now();
                if (!have_header) {
                    auto h = reader.header(stream, offset);
                    if (!h) return h.error();
                    have_header = true;
                }
                auto used = reader.section(stream + offset, length, offset);
                decode_ms += ms_between(t, Clock::now());
                std::lock_guard lock(mu_);
                st_.bytes_done = offset + length;
                st_.stream_bytes = offset + length;
                ++st_.sections;
                if (!used) return used.error();
                return Ok{};
            });
        auto refuse = [&](const std::string& why) {
            transport_send_answer(*conn, StreamAnswer{false, 0, why}, deadline_in(2));
            active_fd_.store(-1);
            close(*conn);
            finish("refused", why);
        };
        if (!bytes) {
            if (bytes.error().code == ErrorCode::kInvalidParams)
                return refuse(bytes.error().message);
            active_fd_.store(-1);
            close(*conn);
            finish("failed", bytes.error().message);
            return;
        }
        const auto t_parse = Clock::now();
        auto state = reader.finish();
        if (!state) return refuse(state.error().message);
        {
            std::lock_guard lock(mu_);
            st_.steps_ms["receive"] = ms_between(t_recv, t_parse);
            st_.steps_ms["decode_while_receiving"] = decode_ms;
            st_.steps_ms["finish"] = ms_between(t_parse, Clock::now());
            st_.connections = state->connections.size();
            st_.dpi_streams = state->dpi.size();
            st_.macs = state->macs.size();
            st_.phase = "installing";
        }
        // The control thread installs (it owns the tables and the pause); this thread waits.
        auto shared = std::make_shared<MigrationState>(std::move(*state));
        auto done = std::make_shared<std::promise<Result<InstallReport>>>();
        std::future<Result<InstallReport>> result = done->get_future();
        sw_.post([this, shared, done] {
            const auto t0 = Clock::now();
            if (Status p = sw_.pause(); !p) {
                done->set_value(p.error());
                return;
            }
            const auto t_paused = Clock::now();
            auto r = MigrationControl(sw_).install(*shared);
            const auto t_installed = Clock::now();
            sw_.resume();
            {
                std::lock_guard lock(mu_);
                st_.pause_ms = ms_between(t0, Clock::now());
                st_.steps_ms["pause"] = ms_between(t0, t_paused);
                st_.steps_ms["install"] = ms_between(t_paused, t_installed);
            }
            done->set_value(std::move(r));
        });
        if (result.wait_until(deadline) != std::future_status::ready || abandoned_.load())
            return refuse("the target did not install the state in time");
        Result<InstallReport> r = result.get();
        if (!r) return refuse(r.error().message);
        const Status sent =
            transport_send_answer(*conn, StreamAnswer{true, shared->stream_id, ""}, deadline);
        active_fd_.store(-1);
        close(*conn);
        // The state is installed either way; a lost answer leaves the source as it was, and
        // its copies of the connections expire there.
        finish("committed", sent ? "" : "commit not delivered: " + sent.error().message);
    });
    return json{{"phase", "listening"}, {"address", status()["address"]}};
}

Result<json> MigrationSession::send(const std::string& address,
                                    const std::optional<std::string>& port, double timeout_s) {
    if (busy()) return make_error(ErrorCode::kBusy, "a migration is in progress");
    join();
    const auto t0 = Clock::now();
    if (Status p = sw_.pause(); !p) return p.error();
    holding_pause_ = true;
    paused_at_ = t0;
    const auto t_paused = Clock::now();
    auto captured = MigrationControl(sw_).capture(port);
    if (!captured) {
        holding_pause_ = false;
        sw_.resume();
        return captured.error();
    }
    auto shared = std::make_shared<MigrationState>(std::move(*captured));
    const auto t_captured = Clock::now();
    auto bytes = std::make_shared<std::vector<uint8_t>>(write_stream(*shared));
    const auto t_encoded = Clock::now();
    {
        std::lock_guard lock(mu_);
        st_ = Progress{};
        st_.steps_ms["pause"] = ms_between(t0, t_paused);
        st_.steps_ms["capture"] = ms_between(t_paused, t_captured);
        st_.steps_ms["encode"] = ms_between(t_captured, t_encoded);
        st_.role = "source";
        st_.phase = "sending";
        st_.address = address;
        st_.port = port.value_or("");
        st_.stream_bytes = bytes->size();
        st_.connections = shared->connections.size();
        st_.dpi_streams = shared->dpi.size();
        st_.macs = shared->macs.size();
        st_.started = t0;
    }
    const Deadline deadline = deadline_in(timeout_s);
    thread_ = std::thread([this, shared, bytes, address, deadline] {
        const auto t_thread = Clock::now();
        Result<StreamAnswer> answer = make_error(ErrorCode::kFailed, "not sent");
        auto fd = transport_connect(address, deadline);
        if (!fd) {
            answer = fd.error();
        } else {
            active_fd_.store(*fd);
            Status sent = Ok{};
            for (size_t at = 0; at < bytes->size() && sent; at += kSendChunk) {
                const size_t n = std::min(kSendChunk, bytes->size() - at);
                sent = transport_send(*fd, bytes->data() + at, n, deadline);
                std::lock_guard lock(mu_);
                st_.bytes_done = at + n;
            }
            const auto t_sent = Clock::now();
            if (!sent) {
                answer = sent.error();
            } else {
                set_phase("waiting_commit");
                answer = transport_read_answer(*fd, deadline);
            }
            std::lock_guard lock(mu_);
            st_.steps_ms["send"] = ms_between(t_thread, t_sent);
            st_.steps_ms["wait_commit"] = ms_between(t_sent, Clock::now());
            active_fd_.store(-1);
            close(*fd);
        }
        if (abandoned_.load()) return;
        sw_.post([this, shared, answer] {
            const bool committed =
                answer && answer->commit && answer->stream_id == shared->stream_id;
            const auto t_retire = Clock::now();
            if (committed) MigrationControl(sw_).retire(*shared);
            {
                std::lock_guard lock(mu_);
                st_.steps_ms["retire"] = ms_between(t_retire, Clock::now());
            }
            holding_pause_ = false;
            sw_.resume();
            {
                std::lock_guard lock(mu_);
                st_.pause_ms = ms_between(paused_at_, Clock::now());
            }
            if (committed)
                finish("committed", "");
            else if (answer && !answer->commit)
                finish("refused", "the target refused: " + answer->message);
            else if (answer)
                finish("failed", "the target answered another stream");
            else
                finish("failed", answer.error().message);
        });
    });
    return json{{"phase", "sending"},
                {"address", address},
                {"stream_bytes", bytes->size()},
                {"connections", shared->connections.size()},
                {"dpi_streams", shared->dpi.size()},
                {"macs", shared->macs.size()}};
}

void add_migrate_session_commands(std::vector<CommandSpec>& t, Switch& sw) {
    auto session = std::make_shared<MigrationSession>(sw);
    t.push_back({"migrate.receive",
                 "wait for one incoming migration stream and install it (all or nothing)",
                 true,
                 {{"listen", ParamType::kString, true, "unix:/path or tcp:HOST:PORT (port 0: any)"},
                  {"timeout_s", ParamType::kUnsigned, false, "give up after (default 60)"}},
                 [session](const json& p) -> Result<json> {
                     return session->receive(p["listen"].get<std::string>(),
                                             p.value("timeout_s", 60.0));
                 }});
    t.push_back({"migrate.send",
                 "send one port's state (or the whole switch's) to a target; the workers pause "
                 "until the target commits, and the moved state is then retired here",
                 true,
                 {{"to", ParamType::kString, true, "the target's unix:/path or tcp:HOST:PORT"},
                  {"port", ParamType::kString, false, "only this port's state"},
                  {"timeout_s", ParamType::kUnsigned, false, "give up after (default 10)"}},
                 [session](const json& p) -> Result<json> {
                     std::optional<std::string> port;
                     if (p.contains("port")) port = p["port"].get<std::string>();
                     return session->send(p["to"].get<std::string>(), port,
                                          p.value("timeout_s", 10.0));
                 }});
    t.push_back({"migrate.status",
                 "the current or last migration: role, phase, progress",
                 true,
                 {},
                 [session](const json&) -> Result<json> { return session->status(); }});
}

}  // namespace ferry
