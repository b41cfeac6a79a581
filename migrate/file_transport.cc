#include "migrate/file_transport.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "migrate/stages.h"
#include "migrate/stream_reader.h"

namespace ferry {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

/// 16 hex digits from the kernel's random source: a temporary name no one can guess.
std::string random_suffix() {
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != static_cast<ssize_t>(sizeof(r)))
        r = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
            (static_cast<uint64_t>(getpid()) << 32);
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(r));
    return buf;
}

Error file_error(const std::string& what, const std::string& file, int err) {
    return make_error(ErrorCode::kFailed, what + " " + file + ": " + std::strerror(err));
}

}  // namespace

Status write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
    // The temporary file is never opened by a name someone else could have planted (a
    // symlink to a file of theirs, or of root's): O_TMPFILE has no name until linkat gives it
    // a fresh random one; without O_TMPFILE, O_CREAT|O_EXCL|O_NOFOLLOW on a random name.
    const size_t slash = path.rfind('/');
    const std::string dir =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    std::string tmp;  // the temporary's name once it has one
    int fd = open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    const bool anonymous = fd >= 0;
    for (int tries = 0; fd < 0 && tries < 16; ++tries) {
        tmp = path + ".tmp." + random_suffix();
        fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) return file_error("cannot create a temporary file for", path, errno);
    auto fail = [&](const std::string& what) -> Status {
        const int err = errno;
        close(fd);
        if (!tmp.empty()) unlink(tmp.c_str());
        return file_error(what, path, err);
    };
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t w = write(fd, bytes.data() + done, bytes.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return fail("cannot write");
        done += static_cast<size_t>(w);
    }
    if (fsync(fd) != 0) return fail("cannot write");
    if (anonymous) {
        // linkat does not follow or replace what the new name is: a planted name is EEXIST.
        const std::string self = "/proc/self/fd/" + std::to_string(fd);
        int rc = -1;
        for (int tries = 0; rc != 0 && tries < 16; ++tries) {
            tmp = path + ".tmp." + random_suffix();
            rc = linkat(AT_FDCWD, self.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW);
            if (rc != 0 && errno != EEXIST) break;
        }
        if (rc != 0) {
            tmp.clear();
            return fail("cannot name the temporary file for");
        }
    }
    if (close(fd) != 0) {
        const int err = errno;
        unlink(tmp.c_str());
        return file_error("cannot write", path, err);
    }
    // rename replaces path itself, never what a symlink at path points to.
    if (rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        unlink(tmp.c_str());
        return make_error(ErrorCode::kFailed,
                          "cannot rename " + tmp + " to " + path + ": " + std::strerror(err));
    }
    return Ok{};
}

Result<nlohmann::json> restore_from_file(MigrationHost& host, const std::string& path) {
    const auto t0 = std::chrono::steady_clock::now();
    auto bytes = read_file_bounded(path, kMaxStreamFile);
    if (!bytes) return bytes.error();
    StreamReadInfo info;
    auto state = read_stream(bytes->data(), bytes->size(), &info);
    if (!state) return make_error(state.error().code, path + ": " + state.error().message);
    MigrationControl mc(host);
    auto report = mc.install(*state);
    if (!report) return make_error(report.error().code, path + ": " + report.error().message);
    host.log(MigrateLog::kInfo,
             "restored %s: %zu connections (%zu DPI streams continued, %zu restarted), "
             "%zu MACs, %zu port addresses, from ferryd %s",
             path.c_str(), report->connections, report->dpi_expanded, report->dpi_restarted,
             report->macs, report->addresses, state->ferryd_version.c_str());
    return nlohmann::json{{"file", path},
                          {"bytes", bytes->size()},
                          {"connections", report->connections},
                          {"dpi_continued", report->dpi_expanded},
                          {"dpi_restarted", report->dpi_restarted},
                          {"macs", report->macs},
                          {"addresses", report->addresses},
                          {"skipped_sections", info.skipped},
                          {"writer", state->ferryd_version},
                          {"ms", ms_since(t0)}};
}

}  // namespace ferry
