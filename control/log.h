// ferryd's log: one line per event on stderr. Each subsystem has its own lowest printed level,
// changed at run time by the log.level method (OVS's vlog/set). When stderr is the systemd
// journal ($JOURNAL_STREAM names it, sd-daemon(3)) a line is "<N>SUBSYSTEM: message" with its
// syslog priority, so journald files errors as errors and adds the time itself; otherwise it is
// "TIME ferryd LEVEL SUBSYSTEM: message" for a person.
// Context: control thread, DPDK's interrupt and telemetry threads, migration threads (each call
// writes one line with one write(2)); never the fast path.
#pragma once

#include <array>
#include <cstdarg>
#include <cstddef>
#include <optional>
#include <string_view>

namespace ferry {

enum class LogLevel { kDebug, kInfo, kWarn, kError };
inline constexpr std::array<std::string_view, 4> kLogLevelNames{"debug", "info", "warn", "error"};
static_assert(kLogLevelNames.size() == static_cast<size_t>(LogLevel::kError) + 1);

/// The parts of ferryd that log; each has its own level. kMain takes the lines of the callers
/// that name none (FERRY_LOG_INFO and friends): start, stop, signals, whatever is ferryd's own.
enum class LogSubsystem {
    kMain,       // ferryd's start and stop, and every line that names no subsystem
    kControl,    // control socket and the JSON-RPC dispatcher
    kPort,       // port hotplug, links, vhost-user
    kRule,       // flow rules and their offload
    kCt,         // connection tracking
    kDpi,        // payload inspection databases
    kMigrate,    // migration, checkpoints and live upgrade
    kEal,        // EAL set-up: hugepages, lcores
    kTelemetry,  // DPDK telemetry endpoints
    kCount
};
inline constexpr std::array<std::string_view, static_cast<size_t>(LogSubsystem::kCount)>
    kLogSubsystemNames{"main", "control", "port", "rule",     "ct",
                       "dpi",  "migrate", "eal",  "telemetry"};
static_assert(kLogSubsystemNames.size() == static_cast<size_t>(LogSubsystem::kCount),
              "one name per subsystem");

/// The name of a level / subsystem as the log, the config and log.level spell it. Context: any.
constexpr std::string_view log_level_name(LogLevel level) {
    return kLogLevelNames[static_cast<size_t>(level)];
}
constexpr std::string_view log_subsystem_name(LogSubsystem s) {
    return kLogSubsystemNames[static_cast<size_t>(s)];
}
/// Parses a level name ("warning" is taken for "warn"). Context: any. @return nullopt if unknown.
std::optional<LogLevel> log_level_from_name(std::string_view name);
/// Parses a subsystem name. Context: any. @return nullopt if unknown.
std::optional<LogSubsystem> log_subsystem_from_name(std::string_view name);

/// Sets the lowest printed level of every subsystem (default kInfo). Context: any thread.
void log_set_level(LogLevel level);
/// Sets one subsystem's lowest printed level. Context: any thread.
void log_set_level(LogSubsystem subsystem, LogLevel level);
/// One subsystem's lowest printed level. Context: any thread.
LogLevel log_level(LogSubsystem subsystem);
/// Whether a line of this level and subsystem would be printed. Context: any thread.
bool log_enabled(LogSubsystem subsystem, LogLevel level);

/// Whether lines go to the journal with "<N>" priority prefixes: $JOURNAL_STREAM is set and
/// names the file stderr is (a child whose stderr was redirected inherits the variable but not
/// the stream). Decided once, at the first call. Context: any thread.
bool log_to_journal();

/// Prints one line of a subsystem if its level allows. Context: any thread except the fast path.
void log_in(LogSubsystem subsystem, LogLevel level, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
/// Prints one line of kMain (the callers that name no subsystem). Context: as log_in.
void log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

/// Formats one line into buf without the newline: the journal form or the human form.
/// Context: any. @return the line's length (at most size - 1; longer messages are cut).
size_t log_format_line(char* buf, size_t size, bool journal, LogSubsystem subsystem, LogLevel level,
                       const char* fmt, va_list ap);

#define FERRY_LOG_INFO(...) ::ferry::log(::ferry::LogLevel::kInfo, __VA_ARGS__)
#define FERRY_LOG_WARN(...) ::ferry::log(::ferry::LogLevel::kWarn, __VA_ARGS__)
#define FERRY_LOG_ERROR(...) ::ferry::log(::ferry::LogLevel::kError, __VA_ARGS__)
#define FERRY_LOG_DEBUG(...) ::ferry::log(::ferry::LogLevel::kDebug, __VA_ARGS__)

// With a subsystem: FERRY_LOG_INFO_IN(kPort, "port %s up", name). The arguments are not
// evaluated when the level is off, so a debug line may format what it likes.
#define FERRY_LOG_AT_(sub, lvl, ...)                                                          \
    do {                                                                                      \
        if (::ferry::log_enabled(::ferry::LogSubsystem::sub, ::ferry::LogLevel::lvl))         \
            ::ferry::log_in(::ferry::LogSubsystem::sub, ::ferry::LogLevel::lvl, __VA_ARGS__); \
    } while (0)
#define FERRY_LOG_DEBUG_IN(sub, ...) FERRY_LOG_AT_(sub, kDebug, __VA_ARGS__)
#define FERRY_LOG_INFO_IN(sub, ...) FERRY_LOG_AT_(sub, kInfo, __VA_ARGS__)
#define FERRY_LOG_WARN_IN(sub, ...) FERRY_LOG_AT_(sub, kWarn, __VA_ARGS__)
#define FERRY_LOG_ERROR_IN(sub, ...) FERRY_LOG_AT_(sub, kError, __VA_ARGS__)

}  // namespace ferry
