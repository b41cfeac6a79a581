#include "migrate/transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "migrate/stream_format.h"
#include "migrate/wire.h"

namespace ferry {
namespace {

constexpr size_t kAnswerHeader = 18;  // magic, stream_id, message length
constexpr size_t kMaxAnswerMessage = 4096;
// The source's question after a lost answer: "what became of this stream?"
constexpr std::array<uint8_t, 8> kOutcomeQuery = {0x89, 'F', 'E', 'R', 'R', 'Y', '?', '?'};

Error sys_error(const std::string& what) {
    return make_error(ErrorCode::kFailed, what + ": " + std::strerror(errno));
}

int remaining_ms(Deadline deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1 << 30));
}

/// Waits until fd is ready for events. @return false on timeout or error (errno set)
bool wait_ready(int fd, short events, Deadline deadline) {
    for (;;) {
        pollfd p{fd, events, 0};
        const int r = poll(&p, 1, remaining_ms(deadline));
        if (r > 0) return true;
        if (r == 0) {
            errno = ETIMEDOUT;
            return false;
        }
        if (errno != EINTR) return false;
    }
}

sockaddr_un unix_addr(const std::string& path) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path.c_str(), path.size());
    return sa;
}

/// Reads exactly n bytes into dst. @return kFailed on EOF, error or deadline
Status read_exact(ByteChannel& ch, uint8_t* dst, size_t n, Deadline deadline) {
    size_t done = 0;
    while (done < n) {
        auto r = ch.read_some(dst + done, n - done, deadline);
        if (!r) return r.error();
        if (*r == 0)
            return make_error(ErrorCode::kFailed, "the peer closed the connection after " +
                                                      std::to_string(done) + " of " +
                                                      std::to_string(n) + " bytes");
        done += *r;
    }
    return Ok{};
}

/// A plain socket: poll for the deadline, then one non-blocking recv or send.
class FdChannel final : public ByteChannel {
public:
    explicit FdChannel(int fd) : fd_(fd) {}

    Result<size_t> read_some(uint8_t* dst, size_t n, Deadline deadline) override {
        for (;;) {
            if (!wait_ready(fd_, POLLIN, deadline)) return sys_error("migration stream");
            const ssize_t r = recv(fd_, dst, n, MSG_DONTWAIT);
            if (r >= 0) return static_cast<size_t>(r);
            if (errno != EINTR && errno != EAGAIN) return sys_error("migration stream");
        }
    }

    Result<size_t> write_some(const uint8_t* src, size_t n, Deadline deadline) override {
        for (;;) {
            if (!wait_ready(fd_, POLLOUT, deadline)) return sys_error("sending the stream");
            const ssize_t w = send(fd_, src, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) return static_cast<size_t>(w);
            if (w < 0 && errno != EINTR && errno != EAGAIN) return sys_error("sending the stream");
        }
    }

    int fd() const override { return fd_; }

private:
    int fd_;
};

/// Removes what path names if it is a socket (an earlier listener's); anything else is not
/// ours to remove. @return Ok (nothing there now), kInvalidParams for a non-socket, kFailed
Status unlink_old_socket(const std::string& path) {
    struct stat st {};
    if (lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return Ok{};
        return sys_error("unix:" + path);
    }
    if (!S_ISSOCK(st.st_mode))
        return make_error(ErrorCode::kInvalidParams,
                          "unix:" + path +
                              ": exists and is not a socket; not replacing it (remove it or "
                              "choose another path)");
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return sys_error("unix:" + path);
    return Ok{};
}

}  // namespace

Result<TransportAddress> transport_parse(const std::string& a) {
    TransportAddress p;
    if (a.rfind("unix:", 0) == 0) {
        p.scheme = TransportScheme::kUnix;
        p.path = a.substr(5);
        if (p.path.empty() || p.path.size() >= sizeof(sockaddr_un{}.sun_path))
            return make_error(ErrorCode::kInvalidParams,
                              "unix socket path must be 1.." +
                                  std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes");
        return p;
    }
    std::string rest;
    if (a.rfind("tcp:", 0) == 0) {
        p.scheme = TransportScheme::kTcp;
        rest = a.substr(4);
    } else if (a.rfind("tcp-insecure:", 0) == 0) {
        p.scheme = TransportScheme::kTcpInsecure;
        rest = a.substr(13);
    } else {
        return make_error(ErrorCode::kInvalidParams,
                          "address must be unix:/path, tcp:HOST:PORT or tcp-insecure:HOST:PORT, "
                          "not " +
                              a);
    }
    const size_t colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size())
        return make_error(ErrorCode::kInvalidParams, "expected tcp:HOST:PORT, not " + a);
    p.host = rest.substr(0, colon);
    p.port = rest.substr(colon + 1);
    if (p.host.size() > 2 && p.host.front() == '[' && p.host.back() == ']')
        p.host = p.host.substr(1, p.host.size() - 2);
    return p;
}

Result<int> transport_listen(const std::string& address) {
    auto a = transport_parse(address);
    if (!a) return a.error();
    if (a->scheme == TransportScheme::kUnix) {
        if (Status s = unlink_old_socket(a->path); !s) return s.error();
        const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return sys_error("socket");
        sockaddr_un sa = unix_addr(a->path);
        // 0600 before listen(): until then a connect() is refused, so no other user gets in
        // between bind() (which applies the umask) and the chmod.
        if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
            Error e = sys_error("listen on " + address);
            close(fd);
            return e;
        }
        if (chmod(a->path.c_str(), 0600) != 0 || listen(fd, 4) != 0) {
            Error e = sys_error("listen on " + address);
            close(fd);
            unlink(a->path.c_str());  // ours: bound just now
            return e;
        }
        return fd;
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    if (const int rc = getaddrinfo(a->host.c_str(), a->port.c_str(), &hints, &res); rc != 0)
        return make_error(ErrorCode::kInvalidParams, address + ": " + gai_strerror(rc));
    int fd = -1;
    Error last = make_error(ErrorCode::kFailed, "no address for " + address);
    for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        const int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4) != 0) {
            last = sys_error("listen on " + address);
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return last;
    return fd;
}

std::string transport_local_address(int fd, const std::string& given) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return given;
    char host[INET6_ADDRSTRLEN] = {};
    const std::string scheme = given.substr(0, given.find(':') + 1);  // "tcp:", "tcp-insecure:"
    if (ss.ss_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        return scheme + std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
    }
    if (ss.ss_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        return scheme + "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
    return given;
}

Result<int> transport_accept(int listen_fd, Deadline deadline) {
    if (!wait_ready(listen_fd, POLLIN, deadline)) return sys_error("waiting for the source");
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return sys_error("accept");
    return fd;
}

Result<int> transport_connect(const std::string& address, Deadline deadline) {
    auto a = transport_parse(address);
    if (!a) return a.error();
    auto finish = [&](int fd, const sockaddr* sa, socklen_t len) -> Result<int> {
        const int flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        if (connect(fd, sa, len) != 0 && errno != EINPROGRESS) {
            Error e = sys_error("connect to " + address);
            close(fd);
            return e;
        }
        int err = 0;
        socklen_t elen = sizeof(err);
        if (!wait_ready(fd, POLLOUT, deadline) ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0) {
            if (err != 0) errno = err;
            Error e = sys_error("connect to " + address);
            close(fd);
            return e;
        }
        fcntl(fd, F_SETFL, flags);
        return fd;
    };
    if (a->scheme == TransportScheme::kUnix) {
        const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return sys_error("socket");
        sockaddr_un sa = unix_addr(a->path);
        return finish(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    if (const int rc = getaddrinfo(a->host.c_str(), a->port.c_str(), &hints, &res); rc != 0)
        return make_error(ErrorCode::kInvalidParams, address + ": " + gai_strerror(rc));
    Result<int> out = make_error(ErrorCode::kFailed, "no address for " + address);
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
        const int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        out = finish(fd, ai->ai_addr, ai->ai_addrlen);
        if (out) {
            const int one = 1;
            setsockopt(*out, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            break;
        }
    }
    freeaddrinfo(res);
    return out;
}

Status transport_check_peer_uid(int fd) {
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return sys_error("SO_PEERCRED");
    const uid_t me = geteuid();
    if (cred.uid == me || cred.uid == 0) return Ok{};
    return make_error(ErrorCode::kFailed, "refused a connection from uid " +
                                              std::to_string(cred.uid) + " (pid " +
                                              std::to_string(cred.pid) + "): only uid " +
                                              std::to_string(me) + " or root may send state here");
}

std::unique_ptr<ByteChannel> plain_channel(int fd) {
    return std::make_unique<FdChannel>(fd);
}

Status transport_send(ByteChannel& ch, const uint8_t* data, size_t n, Deadline deadline) {
    size_t done = 0;
    while (done < n) {
        auto w = ch.write_some(data + done, n - done, deadline);
        if (!w) return w.error();
        done += *w;
    }
    return Ok{};
}

Status transport_send(int fd, const uint8_t* data, size_t n, Deadline deadline) {
    FdChannel ch(fd);
    return transport_send(ch, data, n, deadline);
}

Result<std::vector<uint8_t>> transport_read_stream(int fd, Deadline deadline, size_t max_bytes,
                                                   const SectionCallback& on_section) {
    FdChannel ch(fd);
    return transport_read_stream(ch, deadline, max_bytes, on_section);
}

Result<std::vector<uint8_t>> transport_read_stream(ByteChannel& ch, Deadline deadline,
                                                   size_t max_bytes,
                                                   const SectionCallback& on_section) {
    std::vector<uint8_t> buf(14);
    if (Status s = read_exact(ch, buf.data(), 14, deadline); !s) return s.error();
    if (!std::equal(kStreamMagic.begin(), kStreamMagic.end(), buf.begin())) {
        std::array<uint8_t, 8> swapped = kStreamMagic;
        std::reverse(swapped.begin(), swapped.end());
        const bool sw = std::equal(swapped.begin(), swapped.end(), buf.begin());
        return make_error(ErrorCode::kInvalidParams,
                          sw ? "migration stream: byte-swapped stream (written in the wrong byte "
                               "order) (at offset 0)"
                             : "migration stream: not a ferry migration stream (bad magic) (at "
                               "offset 0)");
    }
    const size_t header_length = size_t{buf[12]} << 8 | buf[13];
    if (header_length < 14)
        return make_error(ErrorCode::kInvalidParams,
                          "migration stream: header_length " + std::to_string(header_length));
    buf.resize(header_length);
    if (Status s = read_exact(ch, buf.data() + 14, header_length - 14, deadline); !s)
        return s.error();
    for (;;) {
        const size_t at = buf.size();
        buf.resize(at + kSectionHeaderBytes);
        if (Status s = read_exact(ch, buf.data() + at, kSectionHeaderBytes, deadline); !s)
            return s.error();
        WireReader h(buf.data() + at, kSectionHeaderBytes);
        const uint16_t type = h.u16();
        h.u16();
        const uint32_t length = h.u32();
        if (length > kMaxSectionBytes)
            return make_error(ErrorCode::kInvalidParams,
                              "migration stream: a section of " + std::to_string(length) +
                                  " bytes (at offset " + std::to_string(at) + ")");
        if (buf.size() + length > max_bytes)
            return make_error(ErrorCode::kInvalidParams,
                              "migration stream: more than " + std::to_string(max_bytes) +
                                  " bytes, more than this target can hold (at offset " +
                                  std::to_string(at) + ")");
        buf.resize(at + kSectionHeaderBytes + length);
        if (Status s = read_exact(ch, buf.data() + at + kSectionHeaderBytes, length, deadline); !s)
            return s.error();
        if (on_section) {
            Status s = on_section(buf.data(), at, kSectionHeaderBytes + length);
            if (!s) return s.error();
        }
        if (type == static_cast<uint16_t>(SectionType::kTrailer)) return buf;
    }
}

Status transport_send_answer(ByteChannel& ch, const StreamAnswer& a, Deadline deadline) {
    std::vector<uint8_t> out;
    WireWriter w(out);
    const auto& magic = a.commit ? kAnswerCommit : kAnswerRefuse;
    w.bytes(magic.data(), magic.size());
    w.u64(a.stream_id);
    const std::string msg = a.message.substr(0, kMaxAnswerMessage);
    w.u16(static_cast<uint16_t>(msg.size()));
    w.bytes(reinterpret_cast<const uint8_t*>(msg.data()), msg.size());
    return transport_send(ch, out.data(), out.size(), deadline);
}

Status transport_send_ready(ByteChannel& ch, Deadline deadline) {
    uint8_t msg[kAnswerHeader] = {};
    std::copy(kAnswerReady.begin(), kAnswerReady.end(), msg);
    return transport_send(ch, msg, sizeof(msg), deadline);
}

Status transport_await_ready(ByteChannel& ch, Deadline deadline) {
    uint8_t head[kAnswerHeader];
    if (Status s = read_exact(ch, head, sizeof(head), deadline); !s)
        return make_error(ErrorCode::kFailed,
                          "the target did not take the pre-copy: " + s.error().message);
    if (std::equal(kAnswerRefuse.begin(), kAnswerRefuse.end(), head)) {
        WireReader r(head + 8, 10);
        r.u64();
        std::string why(r.u16(), '\0');
        if (!why.empty())
            read_exact(ch, reinterpret_cast<uint8_t*>(why.data()), why.size(), deadline);
        return make_error(ErrorCode::kFailed, "the target refused the pre-copy: " + why);
    }
    if (!std::equal(kAnswerReady.begin(), kAnswerReady.end(), head))
        return make_error(ErrorCode::kFailed, "the target's answer to the pre-copy is not READY");
    return Ok{};
}

Result<StreamAnswer> transport_read_answer(ByteChannel& ch, Deadline deadline) {
    uint8_t head[kAnswerHeader];
    if (Status s = read_exact(ch, head, sizeof(head), deadline); !s)
        return make_error(ErrorCode::kFailed, "no answer from the target: " + s.error().message);
    StreamAnswer a;
    if (std::equal(kAnswerCommit.begin(), kAnswerCommit.end(), head))
        a.commit = true;
    else if (!std::equal(kAnswerRefuse.begin(), kAnswerRefuse.end(), head))
        return make_error(ErrorCode::kFailed, "the target's answer is not an answer");
    WireReader r(head + 8, 10);
    a.stream_id = r.u64();
    const uint16_t len = r.u16();
    if (len > kMaxAnswerMessage)
        return make_error(ErrorCode::kFailed, "the target's answer is too long");
    a.message.resize(len);
    if (len != 0) {
        if (Status s = read_exact(ch, reinterpret_cast<uint8_t*>(a.message.data()), len, deadline);
            !s)
            return make_error(ErrorCode::kFailed,
                              "no answer from the target: " + s.error().message);
    }
    return a;
}

Status transport_send_outcome_query(ByteChannel& ch, uint64_t stream_id, Deadline deadline) {
    std::vector<uint8_t> out;
    WireWriter w(out);
    w.bytes(kOutcomeQuery.data(), kOutcomeQuery.size());
    w.u64(stream_id);
    w.u16(0);
    return transport_send(ch, out.data(), out.size(), deadline);
}

Result<uint64_t> transport_read_outcome_query(ByteChannel& ch, Deadline deadline) {
    uint8_t head[kAnswerHeader];
    if (Status s = read_exact(ch, head, sizeof(head), deadline); !s) return s.error();
    WireReader r(head + 8, 10);
    const uint64_t stream_id = r.u64();
    if (!std::equal(kOutcomeQuery.begin(), kOutcomeQuery.end(), head) || r.u16() != 0)
        return make_error(ErrorCode::kInvalidParams, "not a question about a stream's outcome");
    return stream_id;
}

}  // namespace ferry
