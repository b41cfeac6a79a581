#include "migrate/bounded_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ferry {

Result<std::vector<uint8_t>> read_file_bounded(const std::string& path, size_t max_bytes) {
    // O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer or a carrier; only
    // a regular file is read, and reading one never waits on anyone.
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return make_error(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kFailed,
                          "cannot open " + path + ": " + std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return make_error(ErrorCode::kInvalidParams, path + " is not a regular file");
    }
    if (static_cast<uint64_t>(st.st_size) > max_bytes) {
        close(fd);
        return make_error(ErrorCode::kInvalidParams,
                          path + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
    std::vector<uint8_t> out(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < out.size()) {
        const ssize_t r = read(fd, out.data() + done, out.size() - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        done += static_cast<size_t>(r);
    }
    close(fd);
    if (done != out.size()) return make_error(ErrorCode::kFailed, "short read of " + path);
    return out;
}

}  // namespace ferry
