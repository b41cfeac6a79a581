// ferryd's log: one line per event on stderr, with a level and a wall-clock timestamp.
// Context: control thread and DPDK's interrupt thread (each call writes one line atomically).
#pragma once

#include <cstdarg>

namespace ferry {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

/// Sets the lowest level that is printed (default kInfo). Context: control, before threads.
void log_set_level(LogLevel level);

/// Prints one log line. Context: any thread except the fast path.
void log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

#define FERRY_LOG_INFO(...) ::ferry::log(::ferry::LogLevel::kInfo, __VA_ARGS__)
#define FERRY_LOG_WARN(...) ::ferry::log(::ferry::LogLevel::kWarn, __VA_ARGS__)
#define FERRY_LOG_ERROR(...) ::ferry::log(::ferry::LogLevel::kError, __VA_ARGS__)
#define FERRY_LOG_DEBUG(...) ::ferry::log(::ferry::LogLevel::kDebug, __VA_ARGS__)

}  // namespace ferry
