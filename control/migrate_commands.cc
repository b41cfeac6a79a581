// The migrate.* methods of the control socket. They read and change the workers' tables, so
// they run with the workers paused (the dispatcher pauses them).
#include <chrono>

#include "control/log.h"
#include "control/migration.h"
#include "control/switch.h"
#include "migrate/stream_reader.h"
#include "migrate/stream_writer.h"

namespace ferry {

using json = nlohmann::json;

namespace {

constexpr size_t kMaxStreamFile = size_t{4} << 30;

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Result<json> restore_from_file(Switch& sw, const std::string& path) {
    const auto t0 = std::chrono::steady_clock::now();
    auto bytes = read_file_bounded(path, kMaxStreamFile);
    if (!bytes) return bytes.error();
    StreamReadInfo info;
    auto state = read_stream(bytes->data(), bytes->size(), &info);
    if (!state) return make_error(state.error().code, path + ": " + state.error().message);
    MigrationControl mc(sw);
    auto report = mc.install(*state);
    if (!report) return make_error(report.error().code, path + ": " + report.error().message);
    FERRY_LOG_INFO(
        "restored %s: %zu connections (%zu DPI streams continued, %zu restarted), "
        "%zu MACs, from ferryd %s",
        path.c_str(), report->connections, report->dpi_expanded, report->dpi_restarted,
        report->macs, state->ferryd_version.c_str());
    return json{{"file", path},
                {"bytes", bytes->size()},
                {"connections", report->connections},
                {"dpi_continued", report->dpi_expanded},
                {"dpi_restarted", report->dpi_restarted},
                {"macs", report->macs},
                {"skipped_sections", info.skipped},
                {"writer", state->ferryd_version},
                {"ms", ms_since(t0)}};
}

void add_migrate_commands(std::vector<CommandSpec>& t, Switch& sw) {
    t.push_back({"migrate.save",
                 "checkpoint one port's state or the whole switch's into a file (pauses the "
                 "workers while it is captured)",
                 false,
                 {{"file", ParamType::kString, true, "where to write the stream"},
                  {"port", ParamType::kString, false, "only this port's state"}},
                 [&sw](const json& p) -> Result<json> {
                     const auto t0 = std::chrono::steady_clock::now();
                     std::optional<std::string> port;
                     if (p.contains("port")) port = p["port"].get<std::string>();
                     MigrationControl mc(sw);
                     auto state = mc.capture(port);
                     if (!state) return state.error();
                     const std::vector<uint8_t> bytes = write_stream(*state);
                     const std::string file = p["file"].get<std::string>();
                     if (Status s = write_file_atomic(file, bytes); !s) return s.error();
                     return json{{"file", file},
                                 {"bytes", bytes.size()},
                                 {"ports", state->ports.size()},
                                 {"connections", state->connections.size()},
                                 {"dpi_streams", state->dpi.size()},
                                 {"macs", state->macs.size()},
                                 {"ms", ms_since(t0)}};
                 }});
    t.push_back({"migrate.load",
                 "install the state of a stream file (all or nothing; the stream's ports must "
                 "exist here by name, its connections must not clash with tracked ones)",
                 false,
                 {{"file", ParamType::kString, true, "a stream written by migrate.save"}},
                 [&sw](const json& p) -> Result<json> {
                     return restore_from_file(sw, p["file"].get<std::string>());
                 }});
}

}  // namespace ferry
