#include "control/ferryctl/verbs.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "control/ferryctl/format.h"

namespace ferry {
namespace {

using nlohmann::json;

constexpr std::string_view kPortColumns =
    "name type state link dpdk_port queues mtu path devargs mac rx_packets rx_bytes tx_packets "
    "tx_bytes drops";

constexpr std::string_view kCtColumns =
    "worker zone proto state orig reply nat mark ports packets bytes timeout_s";
constexpr std::string_view kDpiColumns = "id action direction flags mark matches regex";
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
    {"port security",  "port.security",  Args::kNameSecurity, "NAME [SECURITY-JSON|@FILE|off]",
     "show, set or turn off the addresses a port may send from, e.g. '{\"mac\":\"02:00:00:00:00:01\",\"ips\":[\"10.0.0.5/24\"]}' (docs/port-security.md)", ""},
    {"port addresses", "port.addresses", Args::kName, "NAME",
     "a port's addresses: configured (port security) and observed, with flags", ""},
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
    {"migrate receive", "migrate.receive", Args::kFirstKeyValues,
     "unix:/PATH|tcp:HOST:PORT|tcp-insecure:HOST:PORT [timeout_s=N] [tls_creds=DIR tls_peer=NAME]",
     "wait for one incoming migration (returns at once; see migrate status)", "phase address", "listen"},
    {"migrate send",    "migrate.send",    Args::kFirstKeyValues,
     "unix:/PATH|tcp:HOST:PORT|tcp-insecure:HOST:PORT [port=NAME] [timeout_s=N] [precopy=true [hold=true] [settle_ms=N]] [tls_creds=DIR] [tls_peer=NAME]",
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

/// One line of the usage text: words and synopsis, then the help in a column. Context: ferryctl.
std::string usage_line(std::string_view words, std::string_view synopsis, std::string_view help) {
    std::string left("  ");
    left.append(words);
    if (!synopsis.empty()) left.append(" ").append(synopsis);
    left.resize(std::max<size_t>(left.size() + 2, 34), ' ');
    return left.append(help).append("\n");
}

}  // namespace

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
        "\nmigration addresses (migrate receive, migrate send):\n"
        "  unix:/PATH              a 0600 socket; the peer must be ferryd's user or root\n"
        "  tcp:HOST:PORT           TLS 1.3 with certificates on both ends: tls_creds=DIR\n"
        "                          (ca-cert.pem, server-cert.pem and server-key.pem to receive,\n"
        "                          client-cert.pem and client-key.pem to send), tls_peer=NAME\n"
        "                          (the name the peer's certificate carries; a sender defaults\n"
        "                          to the address's host)\n"
        "  tcp-insecure:HOST:PORT  clear TCP, no authentication: a trusted, isolated network only\n"
        "\nexit status: 0 done, 1 ferryd refused the command, 2 ferryd unreachable or silent,\n"
        "64 usage error\n";
    return out;
}

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

std::string unknown_command_message(const std::vector<std::string>& command) {
    std::string subcommands;
    std::string group = command[0] + " ";
    for (const Verb& v : kVerbs) {
        if (!v.words.starts_with(group)) continue;
        subcommands += ' ';
        subcommands += v.words.substr(group.size());
    }
    if (!subcommands.empty()) {
        return "'" + command[0] + "' needs a subcommand:" + subcommands;
    }
    return "unknown command '" + command[0] + "'";
}

std::string build_request(const Verb& verb, std::vector<std::string> args, std::string* method,
                          json* params) {
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
            if (!take_name(true)) return "missing NAME; usage: ferryctl " + synopsis;
            break;
        case Args::kOptionalName:
            take_name(false);
            break;
        case Args::kKeyValues:
            break;
        case Args::kRuleJson: {
            if (args.size() != 1) return "expected RULE-JSON; usage: ferryctl " + synopsis;
            json rule = json::parse(args[0], nullptr, /*allow_exceptions=*/false);
            if (rule.is_object()) {
                (*params)["rule"] = rule;
            } else if (rule.is_array()) {
                (*params)["rules"] = rule;
            } else {
                return "RULE-JSON must be a JSON object or array, e.g. "
                       "'{\"id\":1,\"match\":{\"in_port\":\"vm1\"},\"actions\":[\"output:vm2\"]}'";
            }
            return {};
        }
        case Args::kPatterns: {
            if (!args.empty() && args[0] == "replace") {
                (*params)["replace"] = true;
                args.erase(args.begin());
            }
            if (args.size() != 1)
                return "expected PATTERNS-JSON or @FILE; usage: ferryctl " + synopsis;
            std::string text = args[0];
            if (text.starts_with("@")) {
                std::ifstream in(text.substr(1));
                if (!in) return "cannot read " + text.substr(1);
                text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
            }
            json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
            // A whole config file, its dpi section, or the patterns themselves.
            if (doc.is_object() && doc.contains("dpi")) doc = doc["dpi"];
            if (doc.is_object() && doc.contains("patterns")) doc = doc["patterns"];
            if (!doc.is_array())
                return "PATTERNS-JSON must be an array of patterns, e.g. "
                       "'[{\"id\":1,\"regex\":\"evil\",\"action\":\"drop\"}]'";
            (*params)["patterns"] = doc;
            return {};
        }
        case Args::kFirstKeyValues:
            if (args.empty() || args[0].find('=') != std::string::npos)
                return "missing argument; usage: ferryctl " + synopsis;
            (*params)[std::string(verb.first_key)] = args[0];
            args.erase(args.begin());
            break;
        case Args::kOptionalIds:
            if (args.empty()) return {};
            [[fallthrough]];
        case Args::kIds: {
            if (args.empty()) return "expected ID ...; usage: ferryctl " + synopsis;
            json ids = json::array();
            for (const std::string& a : args) {
                char* end = nullptr;
                errno = 0;
                unsigned long long id = std::strtoull(a.c_str(), &end, 10);
                if (a.empty() || *end != '\0' || errno != 0 || a[0] == '-')
                    return "'" + a + "' is not an id";
                ids.push_back(static_cast<uint64_t>(id));
            }
            (*params)["ids"] = ids;
            return {};
        }
        case Args::kLogLevel: {
            // A level name alone sets every subsystem; any other word names a subsystem.
            auto is_level = [](const std::string& w) {
                return w == "debug" || w == "info" || w == "warn" || w == "warning" || w == "error";
            };
            if (args.size() > 2) return "expected [SUBSYSTEM] [LEVEL]; usage: ferryctl " + synopsis;
            if (args.size() == 2) {
                (*params)["subsystem"] = args[0];
                (*params)["level"] = args[1];
            } else if (args.size() == 1) {
                (*params)[is_level(args[0]) ? "level" : "subsystem"] = args[0];
            }
            return {};
        }
        case Args::kNameSecurity: {
            if (!take_name(true)) return "missing NAME; usage: ferryctl " + synopsis;
            if (args.empty()) return {};
            if (args.size() != 1) return "expected one SECURITY-JSON; usage: ferryctl " + synopsis;
            if (args[0] == "off") {
                (*params)["security"] = nullptr;
                return {};
            }
            std::string text = args[0];
            if (text.starts_with("@")) {
                std::ifstream in(text.substr(1));
                if (!in) return "cannot read " + text.substr(1);
                text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
            }
            json sec = json::parse(text, nullptr, /*allow_exceptions=*/false);
            if (!sec.is_object())
                return "SECURITY-JSON must be a JSON object, e.g. "
                       "'{\"mac\":\"02:00:00:00:00:01\",\"ips\":[\"10.0.0.5/24\"]}', or off";
            (*params)["security"] = sec;
            return {};
        }
        case Args::kMethodJson:
            if (args.empty() || args.size() > 2) {
                return "expected METHOD [JSON-PARAMS]; usage: ferryctl " + synopsis;
            }
            *method = args[0];
            if (args.size() == 2) {
                *params = json::parse(args[1], nullptr, /*allow_exceptions=*/false);
                if (!params->is_object()) {
                    return "JSON-PARAMS must be a JSON object, e.g. '{\"name\":\"vm1\"}'";
                }
            }
            return {};
    }
    if (verb.args == Args::kKeyValues || verb.args == Args::kNameKeyValues ||
        verb.args == Args::kFirstKeyValues) {
        if (Status added = add_key_values(args, key_kinds(), params); !added) {
            return added.error().message;
        }
    } else if (!args.empty()) {
        return "unexpected argument '" + args[0] + "'; usage: ferryctl " + synopsis;
    }
    return {};
}

}  // namespace ferry
