#include "control/log.h"

#include <unistd.h>
#include <cstdio>
#include <ctime>

#include <atomic>

namespace ferry {
namespace {
std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
constexpr const char* kLevelNames[] = {"debug", "info", "warn", "error"};
}  // namespace

void log_set_level(LogLevel level) {
    g_min_level.store(static_cast<int>(level));
}

void log(LogLevel level, const char* fmt, ...) {
    if (static_cast<int>(level) < g_min_level.load(std::memory_order_relaxed)) return;
    char line[1024];
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t{};
    gmtime_r(&ts.tv_sec, &t);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ferryd %s: ", t.tm_year + 1900,
                     t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000,
                     kLevelNames[static_cast<int>(level)]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    size_t len = static_cast<size_t>(n) + (m < 0 ? 0 : static_cast<size_t>(m));
    if (len > sizeof(line) - 2) len = sizeof(line) - 2;
    line[len++] = '\n';
    // One write per line keeps lines whole when the interrupt thread logs too.
    ssize_t ignored = write(STDERR_FILENO, line, len);
    (void)ignored;
}

}  // namespace ferry
