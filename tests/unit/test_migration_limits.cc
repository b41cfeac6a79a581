// A hostile stream of about 2 GiB, sent to a target with room for 4096 connections that reads it
// as migrate/session.cc does (transport_read_stream, StreamReader, stream_limits_for_room), in a
// child process whose address space is limited to what it had plus 768 MiB (RLIMIT_AS; not under
// AddressSanitizer, whose shadow memory takes terabytes of address space at start). Each case
// expects a refusal (kInvalidParams) naming what the target cannot hold, before the stream's end:
// never std::bad_alloc, never the whole stream buffered. Test context.
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <functional>
#include <new>
#include <string>

#include "migrate/transport.h"
#include "tests/unit/migration_fixtures.h"

namespace ferry {
namespace {

using namespace migration_test;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

constexpr uint32_t kRoom = 4096;
constexpr size_t kHostileBytes = size_t{2} << 30;
constexpr size_t kHeadroom = size_t{768} << 20;

/// This process's address space in bytes (/proc/self/statm's first field).
size_t address_space_bytes() {
    FILE* f = std::fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f != nullptr) {
        if (std::fscanf(f, "%lu", &pages) != 1) pages = 0;
        std::fclose(f);
    }
    return pages * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

/// The target's side, in the child: exit status 0 and the message on `report` for a refusal,
/// 1 when the stream was taken, 2 for any other error, 3 for std::bad_alloc.
[[noreturn]] void target(int fd, int report) {
    if (!kAddressSanitizer) {
        const rlimit as{address_space_bytes() + kHeadroom, address_space_bytes() + kHeadroom};
        if (setrlimit(RLIMIT_AS, &as) != 0) _exit(4);
    }
    int status = 2;
    std::string message;
    try {
        const StreamLimits limits = stream_limits_for_room(kRoom);
        StreamReader reader(limits);
        bool have_header = false;
        auto got = transport_read_stream(
            fd, std::chrono::steady_clock::now() + std::chrono::seconds(120), limits.bytes,
            [&](const uint8_t* stream, size_t offset, size_t length) -> Status {
                if (!have_header) {
                    auto h = reader.header(stream, offset);
                    if (!h) return h.error();
                    have_header = true;
                }
                auto used = reader.section(stream + offset, length, offset);
                if (!used) return used.error();
                return Ok{};
            });
        if (got) {
            status = 1;
            message = "taken: " + std::to_string(got->size()) + " bytes";
        } else {
            status = got.error().code == ErrorCode::kInvalidParams ? 0 : 2;
            message = got.error().message;
        }
    } catch (const std::bad_alloc&) {
        status = 3;
        message = "std::bad_alloc";
    }
    if (write(report, message.data(), message.size()) < 0) status = 5;
    _exit(status);
}

struct Outcome {
    int status = -1;
    std::string message;
    size_t sent = 0;  // bytes the source got through before the target hung up
};

/// Runs target() in a child and sends it what `hostile` writes, one part at a time.
Outcome send_to_limited_target(const std::function<bool(StreamWriter&, Bytes&)>& hostile) {
    signal(SIGPIPE, SIG_IGN);
    int sv[2], report[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    EXPECT_EQ(pipe(report), 0);
    const pid_t child = fork();
    if (child == 0) {
        close(sv[0]);
        close(report[0]);
        target(sv[1], report[1]);
    }
    close(sv[1]);
    close(report[1]);
    Outcome out;
    Bytes part;
    StreamWriter w(part, meta());
    auto send_part = [&] {
        Bytes b = w.take();
        if (transport_send(sv[0], b.data(), b.size(),
                           std::chrono::steady_clock::now() + std::chrono::seconds(120)))
            out.sent += b.size();
        else
            return false;
        return true;
    };
    bool more = true;
    while (more && send_part()) more = hostile(w, part);
    if (!more) {
        w.finish();
        send_part();
    }
    shutdown(sv[0], SHUT_WR);
    int status = 0;
    waitpid(child, &status, 0);
    out.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    char buf[4096];
    ssize_t n;
    while ((n = read(report[0], buf, sizeof(buf))) > 0) out.message.append(buf, size_t(n));
    close(report[0]);
    close(sv[0]);
    return out;
}

TEST(StreamLimits, FollowTheRoom) {
    const StreamLimits l = stream_limits_for_room(kRoom);
    EXPECT_EQ(l.connections, kRoom);
    EXPECT_EQ(l.bytes, 2 * size_t{kMaxSectionBytes} + kRoom * kStreamBytesPerConnection);
    EXPECT_EQ(stream_limits_for_room(UINT32_MAX).bytes, kMaxStreamBytes);
}

// Sends 32 sections of an unknown non-critical type, 64 MiB each with a good CRC: a reader
// skips them, so only a bound on the stream's bytes stops them.
TEST(StreamLimits, TwoGibOfSkippableSectionsIsRefused) {
    const Bytes payload(kMaxSectionBytes, 0xa5);
    size_t written = 0;
    Outcome o = send_to_limited_target([&](StreamWriter& w, Bytes&) {
        w.section(0x7e01, false, payload);
        written += payload.size();
        return written < kHostileBytes;
    });
    EXPECT_EQ(o.status, 0) << o.message;
    EXPECT_NE(o.message.find("more than this target can hold"), std::string::npos) << o.message;
    EXPECT_LT(o.sent, stream_limits_for_room(kRoom).bytes + size_t{kMaxSectionBytes} * 2);
}

// Sends distinct ESTABLISHED connections, 300,000 per section, for about 2 GiB: each one valid,
// together far more than the target has room for.
TEST(StreamLimits, MoreConnectionsThanTheRoomAreRefused) {
    std::vector<MigratedConnection> batch;
    uint32_t next = 0;
    size_t written = 0;
    Outcome o = send_to_limited_target([&](StreamWriter& w, Bytes&) {
        if (next == 0) w.port(make_port("p0", {}));
        batch.clear();
        for (int i = 0; i < 300000; ++i, ++next)
            batch.push_back(
                make_connection(ct_tuple(4, kProtoTcp, ip4(10, 0, next >> 16, 1),
                                         static_cast<uint16_t>(next), ip4(10, 9, 9, 9), 80),
                                next, 1));
        w.connections(batch.data(), batch.size());
        written += batch.size() * kConnectionWireBytes;
        return written < kHostileBytes;
    });
    EXPECT_EQ(o.status, 0) << o.message;
    EXPECT_NE(o.message.find("more than 4096 connections"), std::string::npos) << o.message;
    EXPECT_LT(o.sent, size_t{kMaxSectionBytes} * 2);
}

}  // namespace
}  // namespace ferry
