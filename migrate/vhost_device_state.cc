#include "migrate/vhost_device_state.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <utility>

#include "migrate/large_buffer.h"

namespace ferry {
namespace {

using Clock = std::chrono::steady_clock;

/// How often a blocked transfer looks at its cancel flag.
constexpr int kSliceMs = 100;
/// A LOAD's buffer at first (grown by doubling, up to the transfer's limit).
constexpr size_t kFirstLoadBuffer = size_t{4} << 20;
/// The pipe's size asked for (Linux's default limit for unprivileged processes, fs.pipe-max-size):
/// a state of megabytes crosses it in far fewer wake-ups than through the default 64 KiB.
constexpr int kPipeBytes = 1 << 20;

/// SET_DEVICE_STATE_FD's payload: transfer direction and migration phase, u32 each, in the
/// front-end's (native) byte order.
constexpr size_t kTransferParamsSize = 8;

void close_all(const int* fds, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (fds[i] >= 0) close(fds[i]);
}

/// Whether fd is a pipe or a socket open for the direction's I/O.
bool fd_fits(int fd, DeviceStateDirection dir) {
    struct stat st {};
    if (fd < 0 || fstat(fd, &st) != 0) return false;
    if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode)) return false;
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return false;
    const int mode = flags & O_ACCMODE;
    return dir == DeviceStateDirection::kSave ? mode != O_RDONLY : mode != O_WRONLY;
}

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

DeviceStateTransfer::DeviceStateTransfer(std::string port, DeviceStateHooks hooks, size_t max_bytes,
                                         uint32_t io_timeout_ms)
    : port_(std::move(port)),
      hooks_(std::move(hooks)),
      max_bytes_(max_bytes),
      io_timeout_ms_(io_timeout_ms) {}

DeviceStateTransfer::~DeviceStateTransfer() {
    abort();
    join_worker();
}

bool DeviceStateTransfer::busy() const {
    std::lock_guard lock(mutex_);
    return stage_ != Stage::kIdle;
}

DeviceStateReply DeviceStateTransfer::handle(uint32_t request, const uint8_t* payload, size_t size,
                                             const int* fds, size_t n_fds) {
    if (request != kVhostUserSetDeviceStateFd && request != kVhostUserCheckDeviceState) return {};
    const uint64_t refused = kDeviceStateError | kDeviceStateNoFd;
    if (request == kVhostUserCheckDeviceState) {
        close_all(fds, n_fds);  // CHECK carries none; a stray one is not kept open
        return {true, check()};
    }
    if (size != kTransferParamsSize || payload == nullptr || n_fds != 1) {
        close_all(fds, n_fds);
        return {true, refused};
    }
    uint32_t direction = 0;
    uint32_t phase = 0;
    memcpy(&direction, payload, 4);
    memcpy(&phase, payload + 4, 4);
    const bool known = direction == static_cast<uint32_t>(DeviceStateDirection::kSave) ||
                       direction == static_cast<uint32_t>(DeviceStateDirection::kLoad);
    const auto dir = static_cast<DeviceStateDirection>(direction);
    if (!known || phase != kDeviceStatePhaseStopped || !fd_fits(fds[0], dir)) {
        close_all(fds, n_fds);
        return {true, refused};
    }
    return {true, start(dir, fds[0])};
}

uint64_t DeviceStateTransfer::start(DeviceStateDirection dir, int fd) {
    {
        std::lock_guard lock(mutex_);
        if (stage_ == Stage::kRunning) {
            // One transfer at a time: a second request while the first runs is refused and
            // the first goes on (its CHECK still answers for it).
            close(fd);
            return kDeviceStateError | kDeviceStateNoFd;
        }
    }
    join_worker();  // a finished transfer nobody CHECKed: its thread is done
    std::lock_guard lock(mutex_);
    stage_ = Stage::kRunning;
    cancel_.store(false);
    report_ = DeviceStateReport{};
    report_.direction = dir;
    install_ = nullptr;
    error_.clear();
    t0_ = Clock::now();
    try {
        worker_ = std::thread([this, dir, fd] { run(dir, fd); });
    } catch (const std::exception&) {
        close(fd);
        stage_ = Stage::kIdle;
        return kDeviceStateError | kDeviceStateNoFd;
    }
    return kDeviceStateNoFd;  // success; the front-end keeps using its own end of the pipe
}

void DeviceStateTransfer::run(DeviceStateDirection dir, int fd) {
    std::string error;
    // Our own end from now on (the front-end closed its copy after sending it): waits are
    // poll()s in slices, so the cancel flag is seen even while the other side is slow.
    const int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    (void)fcntl(fd, F_SETPIPE_SZ, kPipeBytes);  // a hint: a socket or a lower limit keeps its size
    try {
        error = dir == DeviceStateDirection::kSave ? do_save(fd) : do_load(fd);
    } catch (const std::exception& e) {
        error = std::string("internal error: ") + e.what();
    } catch (...) {
        error = "internal error";
    }
    close(fd);  // the end of the data for a SAVE; done reading for a LOAD
    std::lock_guard lock(mutex_);
    if (!error.empty()) install_ = nullptr;
    error_ = std::move(error);
    stage_ = Stage::kDone;
    done_cv_.notify_all();
}

std::string DeviceStateTransfer::do_save(int fd) {
    if (!hooks_.save) return "saving is not set up";
    DeviceStateHooks::Saved saved = hooks_.save();
    if (!saved.error.empty()) return saved.error;
    const Clock::time_point written_from = Clock::now();
    {
        std::lock_guard lock(mutex_);
        report_.connections = saved.connections;
        report_.steps_ms = std::move(saved.steps_ms);
    }
    const Clock::time_point deadline = t0_ + std::chrono::milliseconds(io_timeout_ms_);
    size_t off = 0;
    while (off < saved.bytes.size()) {
        if (cancel_.load()) return "abandoned";
        if (Clock::now() >= deadline) return "the front-end did not read the state in time";
        pollfd p{fd, POLLOUT, 0};
        int r = poll(&p, 1, kSliceMs);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return std::string("poll: ") + strerror(errno);
        if (r == 0) continue;
        ssize_t n = write(fd, saved.bytes.data() + off, saved.bytes.size() - off);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) return std::string("writing the state: ") + strerror(errno);
        off += static_cast<size_t>(n);
        std::lock_guard lock(mutex_);
        report_.bytes = off;
    }
    std::lock_guard lock(mutex_);
    report_.steps_ms["write"] = ms_since(written_from);
    return "";
}

std::string DeviceStateTransfer::do_load(int fd) {
    if (!hooks_.load) return "loading is not set up";
    const Clock::time_point deadline = t0_ + std::chrono::milliseconds(io_timeout_ms_);
    std::vector<uint8_t> bytes;
    uint8_t buf[65536];
    for (;;) {
        if (cancel_.load()) return "abandoned";
        if (Clock::now() >= deadline) return "the front-end did not send the state in time";
        pollfd p{fd, POLLIN, 0};
        int r = poll(&p, 1, kSliceMs);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return std::string("poll: ") + strerror(errno);
        if (r == 0) continue;
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) return std::string("reading the state: ") + strerror(errno);
        if (n == 0) break;  // the front-end closed its end: all of it is here
        if (bytes.size() + static_cast<size_t>(n) > max_bytes_)
            return "the state is larger than " + std::to_string(max_bytes_) + " bytes";
        if (bytes.capacity() - bytes.size() < static_cast<size_t>(n))
            reserve_large(bytes,
                          std::min(max_bytes_, std::max(kFirstLoadBuffer, 2 * bytes.capacity())));
        bytes.insert(bytes.end(), buf, buf + n);
        std::lock_guard lock(mutex_);
        report_.bytes = bytes.size();
    }
    {
        std::lock_guard lock(mutex_);
        report_.steps_ms["read"] = ms_since(t0_);
    }
    DeviceStateHooks::Loaded loaded = hooks_.load(std::move(bytes));
    std::lock_guard lock(mutex_);
    report_.steps_ms.merge(loaded.steps_ms);
    if (!loaded.error.empty()) return loaded.error;
    if (!loaded.install) return "nothing to install";
    report_.connections = loaded.connections;
    install_ = std::move(loaded.install);
    return "";
}

uint64_t DeviceStateTransfer::check() {
    std::unique_lock lock(mutex_);
    if (stage_ == Stage::kIdle) return kDeviceStateError;  // no transfer to answer for
    const bool done = done_cv_.wait_until(
        lock, t0_ + std::chrono::milliseconds(io_timeout_ms_) + std::chrono::seconds(1),
        [this] { return stage_ == Stage::kDone; });
    if (!done) {
        // The thread stops at its next slice; a LOAD installs only here, so nothing was.
        cancel_.store(true);
        lock.unlock();
        finish(false, "the transfer did not finish in time");
        return kDeviceStateError;
    }
    std::string error = error_;
    std::function<std::string()> install = std::move(install_);
    install_ = nullptr;
    const DeviceStateDirection dir = report_.direction;
    lock.unlock();
    // Install only now: the front-end has sent everything and is still there to hear the
    // answer; a LOAD whose front-end went away before asking installs nothing.
    if (error.empty() && dir == DeviceStateDirection::kLoad) {
        const Clock::time_point installed_from = Clock::now();
        try {
            error = install ? install() : "nothing to install";
            std::lock_guard relock(mutex_);
            report_.steps_ms["install"] = ms_since(installed_from);
        } catch (const std::exception& e) {
            error = std::string("internal error: ") + e.what();
        } catch (...) {
            error = "internal error";
        }
    }
    finish(error.empty(), error);
    return error.empty() ? 0 : kDeviceStateError;
}

void DeviceStateTransfer::finish(bool ok, std::string reason) {
    join_worker();
    DeviceStateReport r;
    {
        std::lock_guard lock(mutex_);
        report_.ok = ok;
        report_.reason = std::move(reason);
        report_.ms = ms_since(t0_);
        r = report_;
        stage_ = Stage::kIdle;
        install_ = nullptr;
    }
    if (hooks_.finished) {
        try {
            hooks_.finished(r);
        } catch (...) {
            // a report that cannot be recorded changes nothing about the answer
        }
    }
}

void DeviceStateTransfer::abort() {
    cancel_.store(true);
}

void DeviceStateTransfer::join_worker() {
    std::thread t;
    {
        std::lock_guard lock(mutex_);
        t = std::move(worker_);
    }
    if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
}

}  // namespace ferry
