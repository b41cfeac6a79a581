#include "control/log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace ferry {
namespace {

// Each subsystem's lowest printed level, stored relative to kInfo so that zero-initialisation
// means info before any code runs. Relaxed atomics: a level is read by every logging thread and
// orders nothing; a line printed or skipped just around a change is fine.
std::atomic<int> g_min_level[static_cast<size_t>(LogSubsystem::kCount)] = {};
constexpr int kLevelBias = static_cast<int>(LogLevel::kInfo);

// The syslog priority of each level (sd-daemon(3): <3> err, <4> warning, <6> info, <7> debug).
constexpr std::array<int, 4> kJournalPriority{7, 6, 4, 3};
static_assert(kJournalPriority.size() == kLogLevelNames.size());

/// Whether $JOURNAL_STREAM ("DEV:INODE") names the file stderr is. Context: any.
bool stderr_is_journal() {
    const char* env = std::getenv("JOURNAL_STREAM");
    if (env == nullptr || *env == '\0') return false;
    uintmax_t dev = 0;
    uintmax_t ino = 0;
    if (std::sscanf(env, "%ju:%ju", &dev, &ino) != 2) return false;
    struct stat st {};
    if (fstat(STDERR_FILENO, &st) != 0) return false;
    return static_cast<uintmax_t>(st.st_dev) == dev && static_cast<uintmax_t>(st.st_ino) == ino;
}

}  // namespace

std::optional<LogLevel> log_level_from_name(std::string_view name) {
    if (name == "warning") return LogLevel::kWarn;
    for (size_t i = 0; i < kLogLevelNames.size(); ++i)
        if (kLogLevelNames[i] == name) return static_cast<LogLevel>(i);
    return std::nullopt;
}

std::optional<LogSubsystem> log_subsystem_from_name(std::string_view name) {
    for (size_t i = 0; i < kLogSubsystemNames.size(); ++i)
        if (kLogSubsystemNames[i] == name) return static_cast<LogSubsystem>(i);
    return std::nullopt;
}

void log_set_level(LogLevel level) {
    for (auto& l : g_min_level)
        l.store(static_cast<int>(level) - kLevelBias, std::memory_order_relaxed);
}

void log_set_level(LogSubsystem subsystem, LogLevel level) {
    g_min_level[static_cast<size_t>(subsystem)].store(static_cast<int>(level) - kLevelBias,
                                                      std::memory_order_relaxed);
}

LogLevel log_level(LogSubsystem subsystem) {
    return static_cast<LogLevel>(
        g_min_level[static_cast<size_t>(subsystem)].load(std::memory_order_relaxed) + kLevelBias);
}

bool log_enabled(LogSubsystem subsystem, LogLevel level) {
    return static_cast<int>(level) - kLevelBias >=
           g_min_level[static_cast<size_t>(subsystem)].load(std::memory_order_relaxed);
}

bool log_to_journal() {
    static const bool journal = stderr_is_journal();
    return journal;
}

size_t log_format_line(char* buf, size_t size, bool journal, LogSubsystem subsystem, LogLevel level,
                       const char* fmt, va_list ap) {
    if (size == 0) return 0;
    const std::string_view sub = log_subsystem_name(subsystem);
    int n;
    if (journal) {
        n = std::snprintf(buf, size, "<%d>%.*s: ", kJournalPriority[static_cast<size_t>(level)],
                          static_cast<int>(sub.size()), sub.data());
    } else {
        timespec ts{};
        clock_gettime(CLOCK_REALTIME, &ts);
        tm t{};
        gmtime_r(&ts.tv_sec, &t);
        const std::string_view lvl = log_level_name(level);
        n = std::snprintf(
            buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ferryd %.*s %.*s: ", t.tm_year + 1900,
            t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000,
            static_cast<int>(lvl.size()), lvl.data(), static_cast<int>(sub.size()), sub.data());
    }
    size_t len = n < 0 ? 0 : static_cast<size_t>(n);
    if (len >= size) return size - 1;
    const int m = std::vsnprintf(buf + len, size - len, fmt, ap);
    len += m < 0 ? 0 : static_cast<size_t>(m);
    if (len >= size) len = size - 1;
    // A message's own newlines would start lines journald files without a priority.
    for (size_t i = 0; i < len; ++i)
        if (buf[i] == '\n') buf[i] = ' ';
    return len;
}

namespace {

/// Formats and writes one line. Context: any thread except the fast path.
void emit(LogSubsystem subsystem, LogLevel level, const char* fmt, va_list ap) {
    char line[1024];
    size_t len =
        log_format_line(line, sizeof(line) - 1, log_to_journal(), subsystem, level, fmt, ap);
    line[len++] = '\n';
    // One write per line keeps lines whole when other threads log too.
    ssize_t ignored = write(STDERR_FILENO, line, len);
    (void)ignored;
}

}  // namespace

void log_in(LogSubsystem subsystem, LogLevel level, const char* fmt, ...) {
    if (!log_enabled(subsystem, level)) return;
    va_list ap;
    va_start(ap, fmt);
    emit(subsystem, level, fmt, ap);
    va_end(ap);
}

void log(LogLevel level, const char* fmt, ...) {
    if (!log_enabled(LogSubsystem::kMain, level)) return;
    va_list ap;
    va_start(ap, fmt);
    emit(LogSubsystem::kMain, level, fmt, ap);
    va_end(ap);
}

}  // namespace ferry
