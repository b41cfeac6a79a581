// ferryctl: the command-line client of ferryd's control socket. One table maps command words to
// JSON-RPC methods (verbs.cc; a new verb is one row), connection.cc makes the round trip and
// format.cc turns results into text; this file holds the options, the reporting of outcomes and
// the commands that take more than one call. Exit status: 0 done, 1 ferryd refused the command,
// 2 ferryd could not be reached or did not answer, 64 usage error. `help`, `--help`,
// `COMMAND --help` and `--version` answer without ferryd. With --json every outcome is JSON on
// stdout, errors as {"error": {"code", "message"[, "data"]}}: ferryd's JSON-RPC error object
// (negative codes), or ferryctl's own with the exit status as code (2 or 64).
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/ferryctl/connection.h"
#include "control/ferryctl/format.h"
#include "control/ferryctl/verbs.h"
#include "ferry_version.h"

namespace ferry {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr int kExitRefused = 1;
constexpr int kExitUnreachable = 2;
constexpr int kExitUsage = 64;           // EX_USAGE
constexpr double kDefaultTimeoutS = 30;  // unsafe commands pause workers; port add may take a while

struct Options {
    std::string socket;
    bool json_output = false;
    bool help = false;  // -h/--help: the usage text, or the command's own
    double timeout_s = kDefaultTimeoutS;
    std::vector<std::string> command;  // command words and their arguments
};

/// Where ferryctl's own failures and ferryd's refusals are reported: a line on stderr, or with
/// --json an {"error": {...}} object on stdout, so a script reads every outcome from one place.
/// Context: ferryctl.
struct Reporter {
    bool json = false;

    /// Reports a failure of ferryctl's own (exit_code 2 or 64 is also the JSON code); a usage
    /// error adds the usage text in the human form. @return exit_code.
    int fail(int exit_code, const std::string& message) const {
        if (json) {
            ordered_json e = {{"error", {{"code", exit_code}, {"message", message}}}};
            std::cout << e.dump(2, ' ', false, ordered_json::error_handler_t::replace) << "\n";
        } else if (exit_code == kExitUsage) {
            std::cerr << "ferryctl: " << message << "\n\n" << usage_text();
        } else {
            std::cerr << "ferryctl: " << message << "\n";
        }
        return exit_code;
    }
    /// A usage error. @return kExitUsage, for `return rep.usage(...)`.
    int usage(const std::string& message) const { return fail(kExitUsage, message); }
    /// Reports ferryd's JSON-RPC error object as it came. @return kExitRefused.
    int refused(const ordered_json& error) const {
        if (json) {
            ordered_json e = {{"error", error}};
            std::cout << e.dump(2, ' ', false, ordered_json::error_handler_t::replace) << "\n";
            return kExitRefused;
        }
        std::string code = "?";
        std::string message = error.dump();
        if (error.is_object()) {
            if (auto c = error.find("code"); c != error.end() && c->is_number_integer()) {
                code = c->dump();
            }
            if (auto m = error.find("message"); m != error.end() && m->is_string()) {
                message = m->get<std::string>();
            }
        }
        std::cerr << "ferryctl: error " << code << ": " << message << "\n";
        return kExitRefused;
    }
};

/// Whether --json is among the options (before "--"), so that even an error in an earlier
/// option is reported as JSON. Context: ferryctl.
bool wants_json(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--") return false;
        if (arg == "--json") return true;
    }
    return false;
}

/// Parses options, which may come anywhere before "--". Context: ferryctl.
/// @return the options, or nullopt after printing a usage error or the version (*exit_code set).
std::optional<Options> parse_options(int argc, char** argv, const Reporter& rep, int* exit_code) {
    Options opts;
    const char* env = std::getenv("FERRY_SOCKET");
    opts.socket = env != nullptr && *env != '\0' ? env : kDefaultSocket;
    bool options_done = false;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (options_done || arg.empty() || arg[0] != '-' || arg == "-") {
            opts.command.push_back(arg);
            continue;
        }
        std::string value;
        bool has_value = false;
        if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string::npos) {
            value = arg.substr(eq + 1);
            arg.resize(eq);
            has_value = true;
        }
        auto take_value = [&]() -> bool {
            if (has_value) return true;
            if (i + 1 >= argc) return false;
            value = argv[++i];
            return true;
        };
        if (arg == "--") {
            options_done = true;
        } else if (arg == "-h" || arg == "--help") {
            opts.help = true;
        } else if (arg == "--version") {
            if (rep.json)
                std::cout << ordered_json{{"ferryctl", FERRY_VERSION}}.dump(2) << "\n";
            else
                std::cout << "ferryctl " << FERRY_VERSION << "\n";
            *exit_code = 0;
            return std::nullopt;
        } else if (arg == "--json") {
            opts.json_output = true;
        } else if (arg == "-s" || arg == "--socket") {
            if (!take_value() || value.empty()) {
                *exit_code = rep.usage(arg + " needs a path");
                return std::nullopt;
            }
            opts.socket = value;
        } else if (arg == "--timeout") {
            char* end = nullptr;
            if (take_value()) opts.timeout_s = std::strtod(value.c_str(), &end);
            if (end == nullptr || end == value.c_str() || *end != '\0' || !(opts.timeout_s > 0)) {
                *exit_code = rep.usage("--timeout needs a positive number of seconds");
                return std::nullopt;
            }
        } else {
            *exit_code = rep.usage("unknown option '" + arg + "'");
            return std::nullopt;
        }
    }
    if (opts.command.empty() && !opts.help) {
        *exit_code = rep.usage("no command given");
        return std::nullopt;
    }
    return opts;
}

/// Explains a command that matches no verb, naming the subcommands of a known group.
/// Context: ferryctl. @return kExitUsage.
int unknown_command(const std::vector<std::string>& command, const Reporter& rep) {
    return rep.usage(unknown_command_message(command));
}

/// Polls migrate.status until the migration ends, showing its phase and progress on stderr.
/// Context: ferryctl.
/// @return 0 when it committed, 1 when it was refused or failed, 2 when ferryd went away
int follow_migration(const Options& opts, const Reporter& rep) {
    const bool tty = isatty(STDERR_FILENO) != 0;
    std::string last;
    for (;;) {
        json request = {{"jsonrpc", "2.0"}, {"method", "migrate.status"}, {"id", 1}};
        Result<std::string> line = exchange(opts.socket, request.dump() + "\n", opts.timeout_s);
        if (!line) return rep.fail(kExitUnreachable, line.error().message);
        ordered_json r = ordered_json::parse(*line, nullptr, false);
        if (!r.is_object() || !r.contains("result")) {
            return rep.fail(kExitUnreachable, "malformed answer from ferryd");
        }
        const ordered_json& st = r["result"];
        const std::string phase = st.value("phase", "");
        const uint64_t total = st.value("stream_bytes", uint64_t{0});
        const uint64_t done = st.value("bytes_done", uint64_t{0});
        std::string progress("migrate: ");
        progress.append(phase);
        if (total != 0) {
            progress.append(" ").append(std::to_string(done * 100 / total)).append("% (");
            progress.append(std::to_string(done)).append(" of ").append(std::to_string(total));
            progress.append(" bytes)");
        }
        if (tty)
            std::cerr << "\r" << progress << "\x1b[K" << std::flush;
        else if (progress != last)
            std::cerr << progress << "\n";
        last = progress;
        if (phase == "ready") {  // held after the pre-copy (hold=true): someone continues
            if (tty) std::cerr << "\n";
            std::cerr << "migrate: held after the pre-copy: ferryctl migrate continue (or "
                         "cancel)\n";
            return 0;
        }
        if (phase == "committed" || phase == "refused" || phase == "failed" || phase == "idle") {
            if (tty) std::cerr << "\n";
            if (opts.json_output)
                std::cout << st.dump(2) << "\n";
            else
                std::cout << format_result(st, kMigrateColumns);
            return phase == "committed" ? 0 : kExitRefused;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

/// Calls one method and returns its result. Context: ferryctl.
/// @return the result, or the exit status of a failure already reported through rep
std::variant<ordered_json, int> call_method(const Options& opts, const std::string& method,
                                            const Reporter& rep) {
    json request = {{"jsonrpc", "2.0"}, {"method", method}, {"id", 1}};
    Result<std::string> line = exchange(opts.socket, request.dump() + "\n", opts.timeout_s);
    if (!line) return rep.fail(kExitUnreachable, line.error().message);
    ordered_json r = ordered_json::parse(*line, nullptr, /*allow_exceptions=*/false);
    if (!r.is_object() || (!r.contains("result") && !r.contains("error")))
        return rep.fail(kExitUnreachable, "malformed answer from ferryd");
    if (auto error = r.find("error"); error != r.end()) return rep.refused(*error);
    return r["result"];
}

/// `ferryctl capture NAME ...`: finds the port's DPDK device and ferryd's EAL file prefix, then
/// becomes dpdk-dumpcap (a DPDK secondary process attached to ferryd) on that device.
/// Context: ferryctl. @return only on failure: 1 when the port is unknown or ferryd runs
/// without hugepages (a secondary process cannot attach to a --no-huge primary), 2 when ferryd
/// cannot be reached or dumpcap cannot be run
int run_capture(const Options& opts, const json& params, const Reporter& rep) {
    const std::string name = params.value("name", "");
    for (const auto& [key, value] : params.items()) {
        if (key != "name" && key != "file" && key != "count" && key != "seconds" && key != "filter")
            return rep.usage("capture takes file=, count=, seconds= and filter=, not '" + key +
                             "'");
    }
    auto stats = call_method(opts, "stats", rep);
    if (auto* rc = std::get_if<int>(&stats)) return *rc;
    auto ports = call_method(opts, "port.list", rep);
    if (auto* rc = std::get_if<int>(&ports)) return *rc;
    const ordered_json& eal = std::get<ordered_json>(stats).value("eal", ordered_json::object());
    if (!eal.value("hugepages", false)) {
        return rep.fail(kExitRefused,
                        "ferryd runs without hugepages (--no-huge): dpdk-dumpcap is a DPDK "
                        "secondary process and cannot attach to it; reserve hugepages "
                        "(vm.nr_hugepages, scripts/setup) and restart ferryd");
    }
    std::string device;
    for (const ordered_json& p : std::get<ordered_json>(ports))
        if (p.value("name", "") == name) device = p.value("device", "");
    if (device.empty()) return rep.fail(kExitRefused, "no port '" + name + "'");
    std::vector<std::string> argv = {"dpdk-dumpcap",
                                     "--file-prefix=" + eal.value("file_prefix", ""), "-i", device};
    if (params.contains("file")) argv.insert(argv.end(), {"-w", params["file"].get<std::string>()});
    if (params.contains("count")) argv.insert(argv.end(), {"-c", params["count"].dump()});
    if (params.contains("seconds"))
        argv.insert(argv.end(), {"-a", "duration:" + params["seconds"].dump()});
    if (params.contains("filter"))
        argv.insert(argv.end(), {"-f", params["filter"].get<std::string>()});
    const char* dumpcap = std::getenv("FERRY_DUMPCAP");
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execvp(dumpcap != nullptr ? dumpcap : "dpdk-dumpcap", args.data());
    return rep.fail(
        kExitUnreachable,
        std::string("cannot run dpdk-dumpcap (Debian package dpdk): ") + std::strerror(errno));
}

/// Runs one command line. Context: ferryctl. @return the exit status.
int run(int argc, char** argv) {
    const Reporter rep{.json = wants_json(argc, argv)};
    int exit_code = 0;
    std::optional<Options> opts = parse_options(argc, argv, rep, &exit_code);
    if (!opts) return exit_code;

    // `help [COMMAND]` and `COMMAND --help` are answered here, without ferryd.
    std::vector<std::string> command = opts->command;
    bool help = opts->help;
    if (!command.empty() && command[0] == "help") {
        help = true;
        command.erase(command.begin());
    }
    size_t consumed = 0;
    const Verb* verb = command.empty() ? nullptr : find_verb(command, &consumed);
    if (help) {
        if (command.empty()) {
            std::cout << usage_text();
            return 0;
        }
        if (verb == nullptr) return unknown_command(command, rep);
        std::cout << verb_help_text(*verb);
        return 0;
    }
    if (verb == nullptr) return unknown_command(command, rep);
    std::string method;
    json params;
    std::vector<std::string> args(command.begin() + static_cast<long>(consumed), command.end());
    if (std::string bad = build_request(*verb, std::move(args), &method, &params); !bad.empty())
        return rep.usage(bad);
    if (verb->words == "capture") return run_capture(*opts, params, rep);

    json request = {{"jsonrpc", "2.0"}, {"method", method}, {"params", params}, {"id", 1}};
    Result<std::string> line =
        exchange(opts->socket, request.dump(-1, ' ', false, json::error_handler_t::replace) + "\n",
                 opts->timeout_s);
    if (!line) return rep.fail(kExitUnreachable, line.error().message);
    // ordered_json keeps the daemon's member order for --json and for keys not in `columns`.
    ordered_json response = ordered_json::parse(*line, nullptr, /*allow_exceptions=*/false);
    if (!response.is_object() || (!response.contains("result") && !response.contains("error"))) {
        return rep.fail(kExitUnreachable, "malformed answer from ferryd: " + line->substr(0, 200));
    }
    if (auto error = response.find("error"); error != response.end()) return rep.refused(*error);
    if (verb->follow) return follow_migration(*opts, rep);
    const ordered_json& result = response["result"];
    if (opts->json_output) {
        std::cout << result.dump(2, ' ', false, ordered_json::error_handler_t::replace) << "\n";
    } else if (verb->method == "help") {
        std::cout << format_methods(result);
    } else {
        std::cout << format_result(result, verb->columns);
    }
    return 0;
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) {
    try {
        return ferry::run(argc, argv);
    } catch (const std::exception& e) {
        return ferry::Reporter{.json = ferry::wants_json(argc, argv)}.fail(ferry::kExitUnreachable,
                                                                           e.what());
    }
}
