// ControlServer: a server on a temporary socket path, driven by run_once in a background thread
// (or interleaved with the test where timing matters), talked to by plain blocking clients. Each
// test says what it sends and what it expects back; every wait is bounded.
#include "control/control_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace ferry {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr int kWaitMs = 5000;  // upper bound on any single wait; tests normally take far less

/// Reads a non-blocking descriptor until it has nothing more: what a watch on a pipe does.
void drain(int fd) {
    char buf[16];
    while (::read(fd, buf, sizeof(buf)) > 0) {
    }
}

/// A connected blocking client with its own line buffer.
class Client {
public:
    explicit Client(const std::string& path) {
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
        connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    }
    ~Client() { close(); }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    bool connected() const { return connected_; }
    int fd() const { return fd_; }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

    void send(const std::string& bytes) {
        size_t done = 0;
        while (done < bytes.size()) {
            ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
            ASSERT_GT(n, 0) << std::strerror(errno);
            done += static_cast<size_t>(n);
        }
    }

    /// Next line without its newline, or nullopt on EOF, error or timeout.
    std::optional<std::string> read_line(int timeout_ms = kWaitMs) {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        for (;;) {
            if (auto nl = buf_.find('\n'); nl != std::string::npos) {
                std::string line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                return line;
            }
            if (!wait_readable(deadline)) return std::nullopt;
            char chunk[65536];
            ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
            if (n <= 0) return std::nullopt;
            buf_.append(chunk, static_cast<size_t>(n));
        }
    }

    /// Whether the server closes the connection (EOF or reset) within timeout_ms, with no
    /// unread line in between.
    bool closed_by_server(int timeout_ms = kWaitMs) {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        if (!buf_.empty()) return false;
        if (!wait_readable(deadline)) return false;
        char c;
        return ::recv(fd_, &c, 1, 0) <= 0;
    }

    /// Sends a request and returns the parsed response.
    json call(const std::string& method, const json& params = json::object(), int id = 1) {
        send(json{{"jsonrpc", "2.0"}, {"method", method}, {"params", params}, {"id", id}}.dump() +
             "\n");
        auto line = read_line();
        EXPECT_TRUE(line) << "no response to " << method;
        return line ? json::parse(*line) : json();
    }

private:
    bool wait_readable(std::chrono::steady_clock::time_point deadline) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
        pollfd p{fd_, POLLIN, 0};
        return left > 0 && ::poll(&p, 1, static_cast<int>(left)) == 1;
    }

    int fd_ = -1;
    bool connected_ = false;
    std::string buf_;
};

class ControlServerTest : public ::testing::Test {
protected:
    ControlServerTest() {
        char tmpl[] = "/tmp/ferry-ctl-test-XXXXXX";
        dir_ = ::mkdtemp(tmpl);
        path_ = dir_ + "/run/ferry/ctl.sock";  // parent directories do not exist yet
        table_ = {
            {"echo",
             "returns its params",
             true,
             {{"text", ParamType::kAny, false, ""}},
             [](const json& p) -> Result<json> { return p; }},
            {"clients",
             "connected clients",
             true,
             {},
             [this](const json&) -> Result<json> { return json(server_->client_count()); }},
            {"big",
             "a large result",
             true,
             {{"bytes", ParamType::kUnsigned, true, ""}},
             [](const json& p) -> Result<json> {
                 return json(std::string(p["bytes"].get<size_t>(), 'x'));
             }},
        };
        dispatcher_ = std::make_unique<JsonRpcDispatcher>(table_, nullptr);
    }
    ~ControlServerTest() override {
        stop();
        server_.reset();
        std::filesystem::remove_all(dir_);
    }

    /// Listens on path_ and, if threaded, runs the server's loop in a background thread.
    void start(ControlServerLimits limits = {}, bool threaded = true) {
        auto server = ControlServer::listen(path_, dispatcher_.get(), limits);
        ASSERT_TRUE(server.ok()) << server.error().message;
        server_ = std::move(server.value());
        if (!threaded) return;
        thread_ = std::thread([this] {
            while (!stop_.load(std::memory_order_relaxed)) server_->run_once(5);
        });
    }
    void stop() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }

    /// Asks the server (on its own thread) how many clients it has, until it reports want.
    bool wait_client_count(Client& asker, size_t want) {
        for (auto end = std::chrono::steady_clock::now() + 5s;
             std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(2ms)) {
            if (asker.call("clients")["result"] == want) return true;
        }
        return false;
    }

    std::string dir_;
    std::string path_;
    std::vector<CommandSpec> table_;
    std::unique_ptr<JsonRpcDispatcher> dispatcher_;
    std::unique_ptr<ControlServer> server_;
    std::thread thread_;
    std::atomic<bool> stop_{false};
};

TEST_F(ControlServerTest, RequestGetsResponse) {
    start();
    Client c(path_);
    ASSERT_TRUE(c.connected());
    json r = c.call("echo", {{"text", "hello"}}, 42);
    EXPECT_EQ(r, json::parse(R"({"jsonrpc":"2.0","result":{"text":"hello"},"id":42})"));
    r = c.call("nope");
    EXPECT_EQ(r["error"]["code"], -32601);
}

TEST_F(ControlServerTest, TwoRequestsInOneWrite) {
    start();
    Client c(path_);
    c.send(R"({"jsonrpc":"2.0","method":"echo","params":{"text":1},"id":1})"
           "\n"
           R"({"jsonrpc":"2.0","method":"echo","params":{"text":2},"id":2})"
           "\n");
    auto a = c.read_line();
    auto b = c.read_line();
    ASSERT_TRUE(a && b);
    EXPECT_EQ(json::parse(*a)["id"], 1);
    EXPECT_EQ(json::parse(*b)["id"], 2);
}

TEST_F(ControlServerTest, RequestSplitAcrossWrites) {
    start();
    Client c(path_);
    std::string req = R"({"jsonrpc":"2.0","method":"echo","params":{"text":"split"},"id":9})"
                      "\n";
    for (size_t at = 0; at < req.size(); at += 7) {
        c.send(req.substr(at, 7));
        std::this_thread::sleep_for(1ms);
    }
    auto line = c.read_line();
    ASSERT_TRUE(line);
    EXPECT_EQ(json::parse(*line)["result"]["text"], "split");
}

TEST_F(ControlServerTest, CrLfAndBlankLinesAndNotifications) {
    start();
    Client c(path_);
    // A blank line and a notification get no response; the CRLF request does.
    c.send(
        "\n  \r\n"
        R"({"jsonrpc":"2.0","method":"echo"})"
        "\n"
        R"({"jsonrpc":"2.0","method":"echo","id":5})"
        "\r\n");
    auto line = c.read_line();
    ASSERT_TRUE(line);
    EXPECT_EQ(json::parse(*line)["id"], 5);
}

TEST_F(ControlServerTest, TwentyClientsAtOnce) {
    start();
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < 20; ++i) {
        clients.push_back(std::make_unique<Client>(path_));
        ASSERT_TRUE(clients.back()->connected());
    }
    for (int i = 0; i < 20; ++i) {
        clients[i]->send(
            json{{"jsonrpc", "2.0"}, {"method", "echo"}, {"params", {{"text", i}}}, {"id", i}}
                .dump() +
            "\n");
    }
    for (int i = 0; i < 20; ++i) {
        auto line = clients[i]->read_line();
        ASSERT_TRUE(line) << i;
        EXPECT_EQ(json::parse(*line)["result"]["text"], i);
    }
    EXPECT_TRUE(wait_client_count(*clients[0], 20));
}

TEST_F(ControlServerTest, ClientsBeyondTheLimitAreTurnedAway) {
    start({.max_clients = 2});
    Client a(path_), b(path_);
    EXPECT_EQ(a.call("echo")["result"], json::object());
    EXPECT_EQ(b.call("echo")["result"], json::object());
    Client c(path_);
    auto line = c.read_line();
    ASSERT_TRUE(line);
    EXPECT_EQ(json::parse(*line)["error"]["code"], static_cast<int>(ErrorCode::kBusy));
    EXPECT_TRUE(c.closed_by_server());
    EXPECT_EQ(a.call("clients")["result"], 2);
}

TEST_F(ControlServerTest, OversizedPartialLineGetsErrorThenClose) {
    start({.max_request_bytes = 1024});
    Client c(path_);
    c.send(R"({"jsonrpc":"2.0","method":"echo","params":{"text":")" + std::string(4000, 'a'));
    auto line = c.read_line();
    ASSERT_TRUE(line);
    json r = json::parse(*line);
    EXPECT_EQ(r["error"]["code"], -32600);
    EXPECT_EQ(r["error"]["message"], "request too large (limit 1024 bytes)");
    EXPECT_TRUE(r["id"].is_null());
    EXPECT_TRUE(c.closed_by_server());
}

TEST_F(ControlServerTest, OversizedCompleteLineGetsErrorThenClose) {
    start({.max_request_bytes = 1024});
    Client c(path_);
    // The first request fits and is answered; the second does not; the third is never read.
    std::string ok = R"({"jsonrpc":"2.0","method":"echo","id":1})";
    c.send(ok + "\n" + std::string(1025, ' ') + "\n" + ok + "\n");
    auto first = c.read_line();
    ASSERT_TRUE(first);
    EXPECT_EQ(json::parse(*first)["id"], 1);
    auto second = c.read_line();
    ASSERT_TRUE(second);
    EXPECT_EQ(json::parse(*second)["error"]["code"], -32600);
    EXPECT_TRUE(c.closed_by_server());
}

TEST_F(ControlServerTest, LineExactlyAtTheLimitIsServed) {
    std::string req = R"({"jsonrpc":"2.0","method":"echo","id":1})";
    start({.max_request_bytes = req.size()});
    Client c(path_);
    c.send(req + "\r\n");
    auto line = c.read_line();
    ASSERT_TRUE(line);
    EXPECT_EQ(json::parse(*line)["id"], 1);
}

TEST_F(ControlServerTest, IdleClientIsClosed) {
    start({.idle_timeout_ms = 200});
    Client idle(path_);
    auto begin = std::chrono::steady_clock::now();
    EXPECT_TRUE(idle.closed_by_server(2000));
    auto took = std::chrono::steady_clock::now() - begin;
    EXPECT_GE(took, 150ms);
    // A client that keeps asking stays.
    Client busy(path_);
    for (int i = 0; i < 6; ++i) {
        std::this_thread::sleep_for(60ms);
        EXPECT_TRUE(busy.call("echo").contains("result"));
    }
}

TEST_F(ControlServerTest, IdleDeadlineEndsAnInfiniteWait) {
    // Interleaved, no thread: run_once(-1) must return by itself to close the idle client.
    start({.idle_timeout_ms = 100}, /*threaded=*/false);
    Client c(path_);
    server_->run_once(-1);  // accepts
    ASSERT_EQ(server_->client_count(), 1u);
    auto begin = std::chrono::steady_clock::now();
    while (server_->client_count() > 0 && std::chrono::steady_clock::now() - begin < 2s) {
        server_->run_once(-1);
    }
    EXPECT_EQ(server_->client_count(), 0u);
    EXPECT_TRUE(c.closed_by_server(100));
}

TEST_F(ControlServerTest, ClientClosingMidLineDoesNotDisturbOthers) {
    start();
    Client other(path_);
    {
        Client quitter(path_);
        quitter.send(R"({"jsonrpc":"2.0","method":"ec)");
        ASSERT_TRUE(wait_client_count(other, 2));
    }
    EXPECT_TRUE(wait_client_count(other, 1));
    EXPECT_EQ(other.call("echo", {{"text", "still"}})["result"]["text"], "still");
}

TEST_F(ControlServerTest, HalfCloseStillGetsTheAnswer) {
    start();
    Client c(path_);
    c.send(R"({"jsonrpc":"2.0","method":"echo","id":3})"
           "\n");
    ::shutdown(c.fd(), SHUT_WR);
    auto line = c.read_line();
    ASSERT_TRUE(line);
    EXPECT_EQ(json::parse(*line)["id"], 3);
    EXPECT_TRUE(c.closed_by_server());
}

TEST_F(ControlServerTest, SlowReaderDoesNotBlockOthers) {
    start();
    Client slow(path_);
    // Ask for 3 x 8 MiB and read nothing: far more than the socket buffers hold.
    std::string req = R"({"jsonrpc":"2.0","method":"big","params":{"bytes":8388608},"id":1})"
                      "\n";
    slow.send(req + req + req);
    Client fast(path_);
    // The slow client reads nothing until fast has its answer: a server blocked on writing to
    // slow would never answer, and the call would time out. (No clock bound: on a loaded host
    // building the 24 MiB of answers alone can take seconds.)
    EXPECT_EQ(fast.call("echo", {{"text", "quick"}})["result"]["text"], "quick");
    for (int i = 0; i < 3; ++i) {
        auto line = slow.read_line();
        ASSERT_TRUE(line) << i;
        EXPECT_EQ(json::parse(*line)["result"].get<std::string>().size(), 8388608u);
    }
}

TEST_F(ControlServerTest, SocketIsMode0660AndUnlinkedOnExit) {
    start();
    struct stat st {};
    ASSERT_EQ(::stat(path_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    ASSERT_EQ(::stat((dir_ + "/run/ferry").c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    stop();
    server_.reset();
    EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(ControlServerTest, SecondServerOnTheSamePathIsRefused) {
    start();
    JsonRpcDispatcher other({}, nullptr);
    auto second = ControlServer::listen(path_, &other);
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.error().code, ErrorCode::kConflict);
    EXPECT_NE(second.error().message.find("already in use"), std::string::npos);
    // The first one is unharmed.
    Client c(path_);
    EXPECT_TRUE(c.call("echo").contains("result"));
}

TEST_F(ControlServerTest, StaleSocketFileIsReplaced) {
    std::filesystem::create_directories(dir_ + "/run/ferry");
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(fd);  // a crashed server leaves its file behind
    ASSERT_TRUE(std::filesystem::exists(path_));
    start();
    Client c(path_);
    EXPECT_TRUE(c.call("echo").contains("result"));
}

TEST_F(ControlServerTest, NonSocketFileIsNotTouched) {
    std::filesystem::create_directories(dir_ + "/run/ferry");
    { std::ofstream(path_) << "precious"; }
    auto server = ControlServer::listen(path_, dispatcher_.get());
    ASSERT_FALSE(server.ok());
    EXPECT_EQ(server.error().code, ErrorCode::kConflict);
    EXPECT_TRUE(std::filesystem::is_regular_file(path_));
}

TEST_F(ControlServerTest, PathTooLongIsRefused) {
    auto server = ControlServer::listen("/tmp/" + std::string(200, 'p'), dispatcher_.get());
    ASSERT_FALSE(server.ok());
    EXPECT_EQ(server.error().code, ErrorCode::kInvalidParams);
}

TEST_F(ControlServerTest, WatchCallbackFiresAndCanRemoveItself) {
    start({}, /*threaded=*/false);
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK), 0);
    int fired = 0;
    ASSERT_TRUE(server_
                    ->add_watch(pipe_fds[0],
                                [&] {
                                    drain(pipe_fds[0]);
                                    if (++fired == 2) server_->remove_watch(pipe_fds[0]);
                                })
                    .ok());
    server_->run_once(0);
    EXPECT_EQ(fired, 0);
    for (int round = 1; round <= 3; ++round) {
        ASSERT_EQ(::write(pipe_fds[1], "x", 1), 1);
        server_->run_once(round < 3 ? 1000 : 20);  // round 3: nothing is watching any more
        EXPECT_EQ(fired, std::min(round, 2));
    }
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
}

TEST_F(ControlServerTest, WatchOnARegularFileIsRefused) {
    start({}, /*threaded=*/false);
    std::string file = dir_ + "/plain";
    { std::ofstream(file) << "x"; }
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    EXPECT_FALSE(server_->add_watch(fd, [] {}).ok());
    ::close(fd);
}

TEST_F(ControlServerTest, HeldRequestsWaitAndAreServedAfterwards) {
    // Interleaved, no thread. Sends a request from a connected client and connects a second
    // client while the server holds its clients, which also includes one that hangs up and an
    // idle timeout shorter than the hold. Expects no answer and no accept during the hold,
    // watches served meanwhile, no busy loop on the hung-up one, then both answered.
    start({.idle_timeout_ms = 100}, /*threaded=*/false);
    Client first(path_);
    Client gone(path_);
    server_->run_once(0);
    ASSERT_EQ(server_->client_count(), 2u);
    server_->hold_requests(true);
    first.send(R"({"jsonrpc":"2.0","method":"echo","params":{"text":"held"},"id":7})"
               "\n");
    gone.close();
    Client second(path_);  // waits in the backlog
    ASSERT_TRUE(second.connected());
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK), 0);
    int fired = 0;
    ASSERT_TRUE(server_
                    ->add_watch(pipe_fds[0],
                                [&] {
                                    drain(pipe_fds[0]);
                                    ++fired;
                                })
                    .ok());
    ASSERT_EQ(::write(pipe_fds[1], "x", 1), 1);
    const auto begin = std::chrono::steady_clock::now();
    int turns = 0;
    while (std::chrono::steady_clock::now() - begin < 300ms) {
        server_->run_once(50);
        ++turns;
    }
    EXPECT_EQ(fired, 1);
    EXPECT_LE(turns, 10);  // each turn waited its 50 ms: nothing held kept waking it
    EXPECT_EQ(server_->client_count(), 2u);  // none accepted, none closed as idle
    EXPECT_FALSE(first.read_line(50));
    server_->hold_requests(false);
    std::optional<std::string> answer;
    for (int i = 0; i < 20 && !answer; ++i) {
        server_->run_once(10);
        answer = first.read_line(50);
    }
    ASSERT_TRUE(answer);
    EXPECT_EQ(json::parse(*answer)["result"]["text"], "held");
    second.send(R"({"jsonrpc":"2.0","method":"echo","params":{"text":2},"id":2})"
                "\n");
    answer.reset();
    for (int i = 0; i < 20 && !answer; ++i) {
        server_->run_once(10);
        answer = second.read_line(50);
    }
    ASSERT_TRUE(answer);
    EXPECT_EQ(json::parse(*answer)["id"], 2);
    server_->remove_watch(pipe_fds[0]);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
}

TEST_F(ControlServerTest, WritableWatchFiresWhileThereIsRoom) {
    // A socket pair: the watched end is writable at once, not after its buffer is full, and
    // again once the peer read; watching it for reading instead stops the writable calls.
    start({}, /*threaded=*/false);
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    int fired = 0;
    auto fill = [&] {
        ++fired;
        char buf[4096] = {};
        while (::send(sv[0], buf, sizeof(buf), MSG_NOSIGNAL) > 0) {
        }
    };
    ASSERT_TRUE(server_->add_watch(sv[0], fill, /*writable=*/true).ok());
    server_->run_once(100);
    EXPECT_EQ(fired, 1);
    server_->run_once(50);
    EXPECT_EQ(fired, 1);  // full: not writable
    char buf[1 << 16];
    while (::recv(sv[1], buf, sizeof(buf), 0) > 0) {
    }
    server_->run_once(100);
    EXPECT_EQ(fired, 2);
    int readable = 0;
    ASSERT_TRUE(server_->add_watch(sv[0], [&] { ++readable; }).ok());
    while (::recv(sv[1], buf, sizeof(buf), 0) > 0) {
    }
    server_->run_once(50);
    EXPECT_EQ(fired, 2);
    EXPECT_EQ(readable, 0);
    ASSERT_EQ(::send(sv[1], "x", 1, 0), 1);
    server_->run_once(100);
    EXPECT_EQ(readable, 1);
    server_->remove_watch(sv[0]);
    ::close(sv[0]);
    ::close(sv[1]);
}

}  // namespace
}  // namespace ferry
