// The vhost-user device-state protocol of one connection (migrate/vhost_device_state.h), driven
// as QEMU's front-end drives it: SET_DEVICE_STATE_FD with one end of a pipe, the data, then
// CHECK_DEVICE_STATE. Sends well-formed and hostile requests; expects the specified u64
// answers, the bytes on the pipe, and an install only for a whole, valid LOAD that was CHECKed.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "migrate/vhost_device_state.h"

namespace ferry {
namespace {

// A reader or writer that goes away raises SIGPIPE; ferryd ignores it, and so does this test.
const bool kSigpipeIgnored = signal(SIGPIPE, SIG_IGN) != SIG_ERR;

constexpr uint64_t kAccepted = kDeviceStateNoFd;
constexpr uint64_t kRefused = kDeviceStateError | kDeviceStateNoFd;

std::vector<uint8_t> params(uint32_t direction, uint32_t phase) {
    std::vector<uint8_t> p(8);
    memcpy(p.data(), &direction, 4);
    memcpy(p.data() + 4, &phase, 4);
    return p;
}

struct Pipe {
    int r = -1, w = -1;
    Pipe() {
        int fds[2];
        if (pipe(fds) == 0) {
            r = fds[0];
            w = fds[1];
        }
    }
    ~Pipe() {
        if (r >= 0) close(r);
        if (w >= 0) close(w);
    }
};

std::vector<uint8_t> read_all(int fd) {
    std::vector<uint8_t> out;
    uint8_t buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) out.insert(out.end(), buf, buf + n);
    return out;
}

bool is_open(int fd) {
    return fcntl(fd, F_GETFD) != -1;
}

/// Hooks whose save returns `state` and whose load accepts only a stream equal to `state`.
struct Fixture {
    std::vector<uint8_t> state = std::vector<uint8_t>(300000, 0x5a);
    std::atomic<int> installs{0};
    std::string install_error;
    std::vector<DeviceStateReport> reports;
    DeviceStateHooks hooks() {
        DeviceStateHooks h;
        h.save = [this] { return DeviceStateHooks::Saved{state, 3, "", {}}; };
        h.load = [this](std::vector<uint8_t> b) {
            DeviceStateHooks::Loaded l;
            if (b != state) {
                l.error = "bad stream";
                return l;
            }
            l.connections = 3;
            l.install = [this] {
                ++installs;
                return install_error;
            };
            return l;
        };
        h.finished = [this](const DeviceStateReport& r) { reports.push_back(r); };
        return h;
    }
};

DeviceStateReply send_fd(DeviceStateTransfer& t, uint32_t dir, uint32_t phase, int fd) {
    auto p = params(dir, phase);
    return t.handle(kVhostUserSetDeviceStateFd, p.data(), p.size(), &fd, 1);
}

uint64_t check(DeviceStateTransfer& t) {
    return t.handle(kVhostUserCheckDeviceState, nullptr, 0, nullptr, 0).value;
}

TEST(VhostDeviceState, OtherRequestsAreNotTouched) {
    ASSERT_TRUE(kSigpipeIgnored);
    Fixture f;
    DeviceStateTransfer t("vm1", f.hooks(), 1 << 20);
    Pipe p;
    EXPECT_FALSE(t.handle(1, nullptr, 0, &p.r, 1).handled);
    EXPECT_TRUE(is_open(p.r));
}

TEST(VhostDeviceState, SaveWritesTheStateThenCheckSucceeds) {
    Fixture f;
    DeviceStateTransfer t("vm1", f.hooks(), 1 << 20);
    Pipe p;
    DeviceStateReply r = send_fd(t, 0, 0, p.w);
    p.w = -1;  // handed over, as QEMU does
    ASSERT_TRUE(r.handled);
    EXPECT_EQ(r.value, kAccepted);
    EXPECT_EQ(read_all(p.r), f.state);  // larger than a pipe: written from a thread
    EXPECT_EQ(check(t), 0u);
    ASSERT_EQ(f.reports.size(), 1u);
    EXPECT_TRUE(f.reports[0].ok);
    EXPECT_EQ(f.reports[0].bytes, f.state.size());
    EXPECT_EQ(f.reports[0].connections, 3u);
    EXPECT_EQ(f.reports[0].steps_ms.count("write"), 1u);  // the time the front-end took to read
    EXPECT_FALSE(t.busy());
}

TEST(VhostDeviceState, LoadInstallsOnlyAtCheck) {
    Fixture f;
    DeviceStateTransfer t("vm1", f.hooks(), 1 << 20);
    Pipe p;
    EXPECT_EQ(send_fd(t, 1, 0, p.r).value, kAccepted);
    p.r = -1;
    std::thread writer([&] {
        size_t off = 0;
        while (off < f.state.size()) {
            ssize_t n = write(p.w, f.state.data() + off, f.state.size() - off);
            if (n <= 0) break;
            off += static_cast<size_t>(n);
        }
        close(p.w);
        p.w = -1;
    });
    writer.join();
    EXPECT_EQ(f.installs.load(), 0);
    EXPECT_EQ(check(t), 0u);
    EXPECT_EQ(f.installs.load(), 1);
    ASSERT_EQ(f.reports.size(), 1u);
    EXPECT_TRUE(f.reports[0].ok);
    for (const char* step : {"read", "install"})
        EXPECT_EQ(f.reports[0].steps_ms.count(step), 1u) << step;
}

TEST(VhostDeviceState, RefusedInstallIsAFailureAnswer) {
    Fixture f;
    f.install_error = "zone 7 is over its limit";
    DeviceStateTransfer t("vm1", f.hooks(), 1 << 20);
    Pipe p;
    EXPECT_EQ(send_fd(t, 1, 0, p.r).value, kAccepted);
    p.r = -1;
    std::thread writer([&] {
        ssize_t n = 0;
        for (size_t off = 0; off < f.state.size(); off += static_cast<size_t>(n))
            if ((n = write(p.w, f.state.data() + off, f.state.size() - off)) <= 0) break;
        close(p.w);
        p.w = -1;
    });
    writer.join();
    EXPECT_EQ(check(t), kDeviceStateError);
    ASSERT_EQ(f.reports.size(), 1u);
    EXPECT_EQ(f.reports[0].reason, "zone 7 is over its limit");
}

TEST(VhostDeviceState, TruncatedOrOversizedLoadIsRefusedAndNothingInstalled) {
    Fixture f;
    {
        DeviceStateTransfer t("vm1", f.hooks(), 1 << 20);
        Pipe p;
        EXPECT_EQ(send_fd(t, 1, 0, p.r).value, kAccepted);
        p.r = -1;
        ASSERT_EQ(write(p.w, f.state.data(), 1000), 1000);  // the front-end dies mid-way
        close(p.w);
        p.w = -1;
        EXPECT_EQ(check(t), kDeviceStateError);
    }
    {
        DeviceStateTransfer t("vm1", f.hooks(), 1000);  // bound below the state's size
        Pipe p;
        EXPECT_EQ(send_fd(t, 1, 0, p.r).value, kAccepted);
        p.r = -1;
        std::thread writer([&] {
            ssize_t n = 0;
            for (size_t off = 0; off < f.state.size(); off += static_cast<size_t>(n))
                if ((n = write(p.w, f.state.data() + off, f.state.size() - off)) <= 0) break;
            close(p.w);
            p.w = -1;
        });
        EXPECT_EQ(check(t), kDeviceStateError);
        writer.join();  // our end closed: the writer ends with EPIPE
    }
    EXPECT_EQ(f.installs.load(), 0);
}

TEST(VhostDeviceState, HostileRequestsAreRefusedAndTheirFdsClosed) {
    Fixture f;
    DeviceStateTransfer t("vm1", f.hooks(), 1 << 20);
    struct Case {
        const char* what;
        uint32_t dir, phase;
        bool read_end;  // which end of the pipe is sent
    };
    for (const Case& c :
         {Case{"unknown direction", 2, 0, false}, Case{"unknown phase", 0, 1, false},
          Case{"SAVE with a read end", 0, 0, true}, Case{"LOAD with a write end", 1, 0, false}}) {
        Pipe p;
        const int fd = c.read_end ? p.r : p.w;
        EXPECT_EQ(send_fd(t, c.dir, c.phase, fd).value, kRefused) << c.what;
        EXPECT_FALSE(is_open(fd)) << c.what;
        (c.read_end ? p.r : p.w) = -1;
    }
    auto good = params(0, 0);
    EXPECT_EQ(t.handle(kVhostUserSetDeviceStateFd, good.data(), good.size(), nullptr, 0).value,
              kRefused);  // no fd
    Pipe a, b;
    int two[2] = {a.w, b.w};
    EXPECT_EQ(t.handle(kVhostUserSetDeviceStateFd, good.data(), good.size(), two, 2).value,
              kRefused);
    EXPECT_FALSE(is_open(a.w));
    EXPECT_FALSE(is_open(b.w));
    a.w = b.w = -1;
    Pipe c;
    EXPECT_EQ(t.handle(kVhostUserSetDeviceStateFd, good.data(), 4, &c.w, 1).value, kRefused);
    c.w = -1;
    int file = open("/dev/null", O_WRONLY);
    EXPECT_EQ(send_fd(t, 0, 0, file).value, kRefused);  // not a pipe or socket
    EXPECT_EQ(check(t), kDeviceStateError);             // CHECK with no transfer
    EXPECT_TRUE(f.reports.empty());
}

TEST(VhostDeviceState, SecondRequestWhileOneRunsIsRefused) {
    Fixture f;
    DeviceStateTransfer t("vm1", f.hooks(), 1 << 20);
    Pipe p, q;
    EXPECT_EQ(send_fd(t, 0, 0, p.w).value, kAccepted);
    p.w = -1;
    EXPECT_EQ(send_fd(t, 0, 0, q.w).value, kRefused);  // the first is still writing
    q.w = -1;
    EXPECT_EQ(read_all(p.r), f.state);
    EXPECT_EQ(check(t), 0u);
}

TEST(VhostDeviceState, FrontEndGoneDuringSaveIsAFailure) {
    Fixture f;
    DeviceStateTransfer t("vm1", f.hooks(), 1 << 20);
    Pipe p;
    EXPECT_EQ(send_fd(t, 0, 0, p.w).value, kAccepted);
    p.w = -1;
    close(p.r);  // nobody reads: the writer gets EPIPE
    p.r = -1;
    EXPECT_EQ(check(t), kDeviceStateError);
    ASSERT_EQ(f.reports.size(), 1u);
    EXPECT_FALSE(f.reports[0].ok);
}

TEST(VhostDeviceState, ThrowingHookIsAFailureNotACrash) {
    Fixture f;
    DeviceStateHooks h = f.hooks();
    h.save = []() -> DeviceStateHooks::Saved { throw std::runtime_error("boom"); };
    DeviceStateTransfer t("vm1", h, 1 << 20);
    Pipe p;
    EXPECT_EQ(send_fd(t, 0, 0, p.w).value, kAccepted);
    p.w = -1;
    EXPECT_TRUE(read_all(p.r).empty());
    EXPECT_EQ(check(t), kDeviceStateError);
    ASSERT_EQ(f.reports.size(), 1u);
    EXPECT_NE(f.reports[0].reason.find("boom"), std::string::npos);
}

TEST(VhostDeviceState, AbortStopsAStalledTransfer) {
    Fixture f;
    DeviceStateTransfer t("vm1", f.hooks(), 1 << 20, 60000);
    Pipe p;
    EXPECT_EQ(send_fd(t, 1, 0, p.r).value, kAccepted);  // nothing is ever written
    p.r = -1;
    t.abort();  // e.g. the port is deleted; the destructor joins at once
}

}  // namespace
}  // namespace ferry
