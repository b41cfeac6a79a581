// Unit tests of ferryd's log (control/log.cc): the line formats, the syslog priority of each
// level, per-subsystem levels, and the config's log section.
#include <cstdarg>
#include <string>

#include <gtest/gtest.h>

#include "control/config.h"
#include "control/log.h"

namespace ferry {
namespace {

/// Formats one line as the log would print it. Context: test.
std::string line(bool journal, LogSubsystem s, LogLevel l, const char* fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    size_t n = log_format_line(buf, sizeof(buf), journal, s, l, fmt, ap);
    va_end(ap);
    return std::string(buf, n);
}

TEST(Log, JournalLinesCarryTheSyslogPriority) {
    EXPECT_EQ(line(true, LogSubsystem::kPort, LogLevel::kError, "x %d", 1), "<3>port: x 1");
    EXPECT_EQ(line(true, LogSubsystem::kCt, LogLevel::kWarn, "y"), "<4>ct: y");
    EXPECT_EQ(line(true, LogSubsystem::kMain, LogLevel::kInfo, "ready"), "<6>main: ready");
    EXPECT_EQ(line(true, LogSubsystem::kMigrate, LogLevel::kDebug, "z"), "<7>migrate: z");
}

TEST(Log, HumanLinesCarryTimeLevelAndSubsystem) {
    std::string l = line(false, LogSubsystem::kDpi, LogLevel::kWarn, "alert %s", "a");
    // 2026-12-06T22:40:26.123Z ferryd warn dpi: alert a
    ASSERT_EQ(l.size(), 24 + std::string(" ferryd warn dpi: alert a").size()) << l;
    EXPECT_EQ(l[10], 'T');
    EXPECT_EQ(l[23], 'Z');
    EXPECT_EQ(l.substr(24), " ferryd warn dpi: alert a");
}

TEST(Log, MessageNewlinesDoNotStartLinesAndLongMessagesAreCut) {
    EXPECT_EQ(line(true, LogSubsystem::kControl, LogLevel::kInfo, "a\nb"), "<6>control: a b");
    char buf[16];
    va_list ap{};
    auto cut = [&](const char* fmt, ...) {
        va_start(ap, fmt);
        size_t n =
            log_format_line(buf, sizeof(buf), true, LogSubsystem::kPort, LogLevel::kInfo, fmt, ap);
        va_end(ap);
        return n;
    };
    EXPECT_EQ(cut("%s", "a very long message indeed"), sizeof(buf) - 1);
    EXPECT_EQ(std::string(buf), "<6>port: a very");
}

TEST(Log, LevelsPerSubsystem) {
    log_set_level(LogLevel::kInfo);
    EXPECT_FALSE(log_enabled(LogSubsystem::kMigrate, LogLevel::kDebug));
    log_set_level(LogSubsystem::kMigrate, LogLevel::kDebug);
    EXPECT_TRUE(log_enabled(LogSubsystem::kMigrate, LogLevel::kDebug));
    EXPECT_FALSE(log_enabled(LogSubsystem::kPort, LogLevel::kDebug));
    EXPECT_EQ(log_level(LogSubsystem::kMigrate), LogLevel::kDebug);
    log_set_level(LogLevel::kError);
    EXPECT_FALSE(log_enabled(LogSubsystem::kMigrate, LogLevel::kWarn));
    EXPECT_TRUE(log_enabled(LogSubsystem::kEal, LogLevel::kError));
    log_set_level(LogLevel::kInfo);
}

TEST(Log, NamesRoundTrip) {
    for (size_t i = 0; i < kLogSubsystemNames.size(); ++i) {
        auto s = static_cast<LogSubsystem>(i);
        EXPECT_EQ(log_subsystem_from_name(log_subsystem_name(s)), s);
    }
    EXPECT_EQ(log_level_from_name("warning"), LogLevel::kWarn);
    EXPECT_EQ(log_level_from_name("loud"), std::nullopt);
    EXPECT_EQ(log_subsystem_from_name("nosuch"), std::nullopt);
}

TEST(Log, ConfigSection) {
    nlohmann::json doc = {{"workers", {1}},
                          {"log", {{"level", "warn"}, {"subsystems", {{"migrate", "debug"}}}}}};
    auto c = parse_config(doc);
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->log.level, LogLevel::kWarn);
    ASSERT_EQ(c->log.subsystems.size(), 1u);
    EXPECT_EQ(c->log.subsystems[0].first, LogSubsystem::kMigrate);
    EXPECT_EQ(c->log.subsystems[0].second, LogLevel::kDebug);

    doc["log"]["subsystems"] = {{"nosuch", "debug"}};
    c = parse_config(doc);
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().message.rfind("log.subsystems.nosuch", 0), 0u) << c.error().message;
    doc["log"] = {{"level", "loud"}};
    c = parse_config(doc);
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().message.rfind("log.level", 0), 0u) << c.error().message;
    EXPECT_FALSE(parse_config({{"workers", {1}}})->log.level.has_value());
}

}  // namespace
}  // namespace ferry
