// ferryctl: the command-line client of ferryd's control socket. One table maps command words to
// JSON-RPC methods; a new verb is one row. Exit status: 0 done, 1 ferryd refused the command,
// 2 ferryd could not be reached or did not answer, 64 usage error. `help`, `--help`,
// `COMMAND --help` and `--version` answer without ferryd. With --json every outcome is JSON on
// stdout, errors as {"error": {"code", "message"[, "data"]}}: ferryd's JSON-RPC error object
// (negative codes), or ferryctl's own with the exit status as code (2 or 64).
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/ferryctl/format.h"
#include "ferry_version.h"

namespace ferry {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

constexpr int kExitRefused = 1;
constexpr int kExitUnreachable = 2;
constexpr int kExitUsage = 64;  // EX_USAGE
constexpr const char* kDefaultSocket = "/run/ferry/ferryd.sock";
constexpr double kDefaultTimeoutS = 30;  // unsafe commands pause workers; port add may take a while

/// How a verb's arguments become params.
enum class Args {
    kNone,            // no arguments
    kName,            // NAME -> {"name": NAME}
    kOptionalName,    // [NAME]
    kKeyValues,       // [key=value ...]
    kNameKeyValues,   // NAME key=value ...
    kMethodJson,      // METHOD [JSON-PARAMS]: the escape hatch
    kRuleJson,        // RULE-JSON: an object -> {"rule": ...}, an array -> {"rules": [...]}
    kIds,             // ID ... -> {"ids": [...]}
    kOptionalIds,     // [ID ...]: none means all
    kPatterns,        // [replace] PATTERNS-JSON|@FILE -> {"patterns": [...], "replace": bool}
    kFirstKeyValues,  // VALUE key=value ... -> {first_key: VALUE, key: value ...}
    kLogLevel,        // [SUBSYSTEM] [LEVEL] -> {"subsystem": ..., "level": ...}
};

struct Verb {
    std::string_view words;   // what the user types, e.g. "port add"
    std::string_view method;  // the JSON-RPC method ("" for call)
    Args args;
    std::string_view synopsis;  // the arguments, for the usage text
    std::string_view help;
    std::string_view columns;  // keys to show first (results carry no key order of their own)
    std::string_view first_key = {};  // kFirstKeyValues: the params key of the first argument
    bool follow = false;              // poll migrate.status until the migration ends
};

constexpr std::string_view kPortColumns =
    "name type state link dpdk_port queues path devargs mac rx_packets rx_bytes tx_packets "
    "tx_bytes drops";

constexpr std::string_view kCtColumns =
    "worker zone proto state orig reply nat mark ports packets bytes timeout_s";
constexpr std::string_view kDpiColumns = "id action direction flags mark matches regex";
constexpr std::string_view kMigrateColumns =
    "role phase address port connections dpi_streams macs stream_bytes bytes_done pause_ms "
    "elapsed_ms error";
constexpr std::string_view kRuleColumns = "id table priority match actions packets bytes offload";

// clang-format off
constexpr Verb kVerbs[] = {
    {"version",    "version",    Args::kNone,          "",                "versions of ferryd, DPDK and the control API", "ferryd dpdk api"},
    {"stats",      "stats",      Args::kNone,          "",                "switch-wide counters and per-worker load",
     "uptime_s ports macs workers lcore packets busy_cycles idle_cycles cycles_per_packet"},
    {"shutdown",   "shutdown",   Args::kNone,          "",                "stop ferryd", ""},
    {"methods",    "help",       Args::kNone,          "",                "the methods ferryd offers, with their params", ""},
    {"log level",  "log.level",  Args::kLogLevel,      "[SUBSYSTEM] [LEVEL]",
     "show or set log levels (debug info warn error), one subsystem's or all", "subsystem level"},
    {"port list",  "port.list",  Args::kNone,          "",                "ports and their state", kPortColumns},
    {"port add",   "port.add",   Args::kNameKeyValues, "NAME key=value ...",
     "add a port, e.g. type=vhost-user path=/tmp/vm.sock mode=client queues=2", kPortColumns},
    {"port del",   "port.del",   Args::kName,          "NAME",            "remove a port", kPortColumns},
    {"port stats", "port.stats", Args::kOptionalName,  "[NAME]",          "per-port packet, byte and drop counters", kPortColumns},
    {"mac list",   "mac.list",   Args::kKeyValues,     "[port=NAME] [vlan=N]", "learned MAC addresses", "mac vlan port age_s"},
    {"mac flush",  "mac.flush",  Args::kKeyValues,     "[port=NAME]",     "forget learned MAC addresses", ""},
    {"rule add",   "rule.add",   Args::kRuleJson,      "RULE-JSON",       "add a rule object, or an array of rules atomically (docs/rules.md)", ""},
    {"rule del",   "rule.del",   Args::kIds,           "ID ...",          "delete rules by id, all or none", ""},
    {"rule list",  "rule.list",  Args::kKeyValues,     "[table=N]",       "rules and their hit counters", kRuleColumns},
    {"rule flush", "rule.flush", Args::kKeyValues,     "[table=N]",       "delete every rule, or one table's", ""},
    {"flow dump",  "flow.dump",  Args::kKeyValues,     "[lcore=N] [limit=N]", "a worker's flow cache", ""},
    {"ct list",    "ct.list",    Args::kKeyValues,     "[zone=N] [port=NAME] [address=IP] [state=S] [limit=N] [cursor=N]",
     "tracked connections, a page at a time", kCtColumns},
    {"ct flush",   "ct.flush",   Args::kKeyValues,     "[zone=N] [port=NAME]", "forget tracked connections", ""},
    {"ct stats",   "ct.stats",   Args::kNone,          "",                "connections by state, zone and worker", "connections"},
    {"ct limit",   "ct.limit",   Args::kKeyValues,     "zone=N [limit=N] [liberal=true|false]",
     "show or set a zone's connection limit and options", "zone limit liberal connections"},
    {"dpi load",   "dpi.load",   Args::kPatterns,      "[replace] PATTERNS-JSON|@FILE",
     "add payload patterns (an array, an object with \"patterns\", or a config file's dpi section)", "patterns generation hash stream_bytes"},
    {"dpi list",   "dpi.list",   Args::kNone,          "",                "loaded payload patterns and their matches", kDpiColumns},
    {"dpi stats",  "dpi.stats",  Args::kNone,          "",                "payload inspection counters, streams and database",
     "generation hash pattern_count streams_in_use packets bytes matches drops alerts marks"},
    {"dpi clear",  "dpi.clear",  Args::kOptionalIds,   "[ID ...]",        "remove payload patterns, all by default", "patterns generation hash"},
    {"migrate save",    "migrate.save",    Args::kFirstKeyValues, "FILE [port=NAME]",
     "checkpoint the switch's (or one port's) state into a file", "file bytes ports connections dpi_streams macs ms", "file"},
    {"migrate load",    "migrate.load",    Args::kFirstKeyValues, "FILE",
     "install a checkpoint (all or nothing)", "file bytes connections dpi_continued dpi_restarted macs ms", "file"},
    {"migrate receive", "migrate.receive", Args::kFirstKeyValues, "unix:/PATH|tcp:HOST:PORT [timeout_s=N]",
     "wait for one incoming migration (returns at once; see migrate status)", "phase address", "listen"},
    {"migrate send",    "migrate.send",    Args::kFirstKeyValues, "unix:/PATH|tcp:HOST:PORT [port=NAME] [timeout_s=N] [precopy=true [hold=true]]",
     "move the switch's (or one port's) state to a target, showing progress until it commits", kMigrateColumns, "to", true},
    {"migrate continue", "migrate.continue", Args::kNone,         "", "a send held in phase ready (hold=true): go on, showing progress until it commits", kMigrateColumns, "", true},
    {"migrate cancel",  "migrate.cancel",  Args::kNone,           "", "a send held in phase ready, or a receive nobody connected to: give it up", "phase"},
    {"migrate status",  "migrate.status",  Args::kNone,           "", "the current or last migration", kMigrateColumns},
    {"capture",    "",           Args::kNameKeyValues, "NAME [file=PATH] [count=N] [seconds=N] [filter=EXPR]",
     "capture a port's packets with dpdk-dumpcap (needs ferryd on hugepages); Ctrl-C stops it", ""},
    {"call",       "",           Args::kMethodJson,    "METHOD [JSON-PARAMS]", "call any method with a params object", "name mac lcore"},
};
// The words ferryctl answers itself, shown in the usage text beside the verbs.
constexpr std::string_view kHelpSynopsis = "help [COMMAND]";
constexpr std::string_view kHelpText = "this text, or one command's (also: COMMAND --help)";
// clang-format on

/// Value conversions of key=value arguments, shared by every verb. Context: ferryctl.
const CliKeyKinds& key_kinds() {
    static const CliKeyKinds kinds = {
        .list_keys = {"rx_pin", "trunks"},
        .string_keys = {"name", "port", "type", "path", "mode", "devargs", "mac", "address",
                        "state", "file", "filter"},
    };
    return kinds;
}

struct Options {
    std::string socket;
    bool json_output = false;
    bool help = false;  // -h/--help: the usage text, or the command's own
    double timeout_s = kDefaultTimeoutS;
    std::vector<std::string> command;  // command words and their arguments
};

/// One line of the usage text: words and synopsis, then the help in a column. Context: ferryctl.
std::string usage_line(std::string_view words, std::string_view synopsis, std::string_view help) {
    std::string left("  ");
    left.append(words);
    if (!synopsis.empty()) left.append(" ").append(synopsis);
    left.resize(std::max<size_t>(left.size() + 2, 34), ' ');
    return left.append(help).append("\n");
}

/// The usage text, built from the verb table. Context: ferryctl.
std::string usage_text() {
    std::string out =
        "usage: ferryctl [-s SOCKET] [--json] [--timeout SEC] COMMAND [ARGS...]\n\ncommands:\n";
    for (const Verb& v : kVerbs) out += usage_line(v.words, v.synopsis, v.help);
    out += usage_line(kHelpSynopsis, "", kHelpText);
    out +=
        "\noptions:\n"
        "  -s, --socket PATH   control socket (default: $FERRY_SOCKET, else " +
        std::string(kDefaultSocket) +
        ")\n"
        "  --json              print the result as JSON, and errors as {\"error\": {\"code\",\n"
        "                      \"message\"}} on stdout: ferryd's (negative codes) or ferryctl's\n"
        "                      own (code 2 or 64, as the exit status)\n"
        "  --timeout SEC       wait at most SEC seconds for the answer (default 30)\n"
        "  -h, --help          show this text, or after a command that command's help\n"
        "  --version           show ferryctl's version\n"
        "\nexit status: 0 done, 1 ferryd refused the command, 2 ferryd unreachable or silent,\n"
        "64 usage error\n";
    return out;
}

/// One verb's synopsis and help, for `ferryctl COMMAND --help`. Context: ferryctl.
std::string verb_help_text(const Verb& v) {
    std::string out("usage: ferryctl [-s SOCKET] [--json] [--timeout SEC] ");
    out.append(v.words);
    if (!v.synopsis.empty()) out.append(" ").append(v.synopsis);
    out.append("\n\n").append(v.help).append("\n");
    if (!v.method.empty()) {
        out.append("\nJSON-RPC method: ").append(v.method);
        out.append(" (`ferryctl methods` lists its params; docs/control-api.md)\n");
    }
    return out;
}

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

/// The verb whose words start the command, longest match first. Context: ferryctl.
/// @param consumed set to the number of command words the verb takes
const Verb* find_verb(const std::vector<std::string>& command, size_t* consumed) {
    const Verb* best = nullptr;
    for (const Verb& v : kVerbs) {
        size_t n = 0;
        bool match = true;
        for (size_t pos = 0; pos < v.words.size() && match; ++n) {
            size_t end = std::min(v.words.find(' ', pos), v.words.size());
            match = n < command.size() && command[n] == v.words.substr(pos, end - pos);
            pos = end + 1;
        }
        if (match && (best == nullptr || n > *consumed)) {
            best = &v;
            *consumed = n;
        }
    }
    return best;
}

/// Explains a command that matches no verb, naming the subcommands of a known group.
/// Context: ferryctl. @return kExitUsage.
int unknown_command(const std::vector<std::string>& command, const Reporter& rep) {
    std::string subcommands;
    std::string group = command[0] + " ";
    for (const Verb& v : kVerbs) {
        if (!v.words.starts_with(group)) continue;
        subcommands += ' ';
        subcommands += v.words.substr(group.size());
    }
    if (!subcommands.empty()) {
        return rep.usage("'" + command[0] + "' needs a subcommand:" + subcommands);
    }
    return rep.usage("unknown command '" + command[0] + "'");
}

/// Builds the method and params from the verb's arguments. Context: ferryctl.
/// @return 0, or the exit code after printing a usage error.
int build_request(const Verb& verb, std::vector<std::string> args, std::string* method,
                  json* params, const Reporter& rep) {
    *method = verb.method;
    *params = json::object();
    std::string synopsis = std::string(verb.words) + " " + std::string(verb.synopsis);
    auto take_name = [&](bool required) -> bool {
        if (args.empty() || args[0].find('=') != std::string::npos) return !required;
        (*params)["name"] = args[0];
        args.erase(args.begin());
        return true;
    };
    switch (verb.args) {
        case Args::kNone:
            break;
        case Args::kName:
        case Args::kNameKeyValues:
            if (!take_name(true)) return rep.usage("missing NAME; usage: ferryctl " + synopsis);
            break;
        case Args::kOptionalName:
            take_name(false);
            break;
        case Args::kKeyValues:
            break;
        case Args::kRuleJson: {
            if (args.size() != 1)
                return rep.usage("expected RULE-JSON; usage: ferryctl " + synopsis);
            json rule = json::parse(args[0], nullptr, /*allow_exceptions=*/false);
            if (rule.is_object()) {
                (*params)["rule"] = rule;
            } else if (rule.is_array()) {
                (*params)["rules"] = rule;
            } else {
                return rep.usage(
                    "RULE-JSON must be a JSON object or array, e.g. "
                    "'{\"id\":1,\"match\":{\"in_port\":\"vm1\"},\"actions\":[\"output:vm2\"]}'");
            }
            return 0;
        }
        case Args::kPatterns: {
            if (!args.empty() && args[0] == "replace") {
                (*params)["replace"] = true;
                args.erase(args.begin());
            }
            if (args.size() != 1)
                return rep.usage("expected PATTERNS-JSON or @FILE; usage: ferryctl " + synopsis);
            std::string text = args[0];
            if (text.starts_with("@")) {
                std::ifstream in(text.substr(1));
                if (!in) return rep.usage("cannot read " + text.substr(1));
                text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
            }
            json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
            // A whole config file, its dpi section, or the patterns themselves.
            if (doc.is_object() && doc.contains("dpi")) doc = doc["dpi"];
            if (doc.is_object() && doc.contains("patterns")) doc = doc["patterns"];
            if (!doc.is_array())
                return rep.usage(
                    "PATTERNS-JSON must be an array of patterns, e.g. "
                    "'[{\"id\":1,\"regex\":\"evil\",\"action\":\"drop\"}]'");
            (*params)["patterns"] = doc;
            return 0;
        }
        case Args::kFirstKeyValues:
            if (args.empty() || args[0].find('=') != std::string::npos)
                return rep.usage("missing argument; usage: ferryctl " + synopsis);
            (*params)[std::string(verb.first_key)] = args[0];
            args.erase(args.begin());
            break;
        case Args::kOptionalIds:
            if (args.empty()) return 0;
            [[fallthrough]];
        case Args::kIds: {
            if (args.empty()) return rep.usage("expected ID ...; usage: ferryctl " + synopsis);
            json ids = json::array();
            for (const std::string& a : args) {
                char* end = nullptr;
                errno = 0;
                unsigned long long id = std::strtoull(a.c_str(), &end, 10);
                if (a.empty() || *end != '\0' || errno != 0 || a[0] == '-')
                    return rep.usage("'" + a + "' is not an id");
                ids.push_back(static_cast<uint64_t>(id));
            }
            (*params)["ids"] = ids;
            return 0;
        }
        case Args::kLogLevel: {
            // A level name alone sets every subsystem; any other word names a subsystem.
            auto is_level = [](const std::string& w) {
                return w == "debug" || w == "info" || w == "warn" || w == "warning" || w == "error";
            };
            if (args.size() > 2)
                return rep.usage("expected [SUBSYSTEM] [LEVEL]; usage: ferryctl " + synopsis);
            if (args.size() == 2) {
                (*params)["subsystem"] = args[0];
                (*params)["level"] = args[1];
            } else if (args.size() == 1) {
                (*params)[is_level(args[0]) ? "level" : "subsystem"] = args[0];
            }
            return 0;
        }
        case Args::kMethodJson:
            if (args.empty() || args.size() > 2) {
                return rep.usage("expected METHOD [JSON-PARAMS]; usage: ferryctl " + synopsis);
            }
            *method = args[0];
            if (args.size() == 2) {
                *params = json::parse(args[1], nullptr, /*allow_exceptions=*/false);
                if (!params->is_object()) {
                    return rep.usage(
                        "JSON-PARAMS must be a JSON object, e.g. '{\"name\":\"vm1\"}'");
                }
            }
            return 0;
    }
    if (verb.args == Args::kKeyValues || verb.args == Args::kNameKeyValues ||
        verb.args == Args::kFirstKeyValues) {
        if (Status added = add_key_values(args, key_kinds(), params); !added) {
            return rep.usage(added.error().message);
        }
    } else if (!args.empty()) {
        return rep.usage("unexpected argument '" + args[0] + "'; usage: ferryctl " + synopsis);
    }
    return 0;
}

/// Milliseconds left until deadline, at least 0. Context: ferryctl.
int ms_left(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return static_cast<int>(std::max<int64_t>(left.count(), 0));
}

/// Connects, sends one request line and reads one response line. Context: ferryctl.
/// @return the response line, or an error message for the user (exit status 2).
Result<std::string> exchange(const std::string& path, const std::string& request,
                             double timeout_s) {
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(timeout_s));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) {
        return make_error(ErrorCode::kFailed, "socket path '" + path + "' is too long");
    }
    std::memcpy(addr.sun_path, path.data(), path.size());
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return make_error(ErrorCode::kFailed, std::string("socket: ") + std::strerror(errno));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};

    // A unix socket connects at once or fails; EAGAIN means the server's backlog is full.
    while (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        if (errno == EAGAIN && ms_left(deadline) > 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        std::string hint = errno == ENOENT || errno == ECONNREFUSED
                               ? " (is ferryd running? choose the socket with -s or FERRY_SOCKET)"
                           : errno == EACCES ? " (the socket is mode 0660: run as root or as a "
                                               "member of its group)"
                                             : "";
        std::string message = "cannot connect to ferryd at " + path + ": ";
        message += std::strerror(errno);
        message += hint;
        return make_error(ErrorCode::kFailed, std::move(message));
    }

    char seconds[32];
    std::snprintf(seconds, sizeof(seconds), "%g", timeout_s);
    std::string timeout_message = "no answer from ferryd at " + path + " within " + seconds + " s";
    for (size_t sent = 0; sent < request.size();) {
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, ms_left(deadline)) == 0) {
            return make_error(ErrorCode::kFailed, timeout_message);
        }
        ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return make_error(ErrorCode::kFailed,
                              std::string("cannot send to ferryd: ") + std::strerror(errno));
        }
        if (n > 0) sent += static_cast<size_t>(n);
    }

    std::string response;
    for (;;) {
        if (auto nl = response.find('\n'); nl != std::string::npos) {
            response.resize(nl);
            return response;
        }
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, ms_left(deadline)) == 0) {
            return make_error(ErrorCode::kFailed, timeout_message);
        }
        char buf[65536];
        ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            return make_error(ErrorCode::kFailed,
                              "ferryd at " + path + " closed the connection without an answer");
        }
        if (n > 0) response.append(buf, static_cast<size_t>(n));
    }
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
    if (int rc = build_request(*verb, std::move(args), &method, &params, rep); rc != 0) return rc;
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
