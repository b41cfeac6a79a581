// ferryd: load and validate the configuration, start DPDK, build the switch, serve the control
// socket until asked to stop, then tear everything down and remove DPDK's runtime files.
#include <fcntl.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_pdump.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "control/commands.h"
#include "control/config.h"
#include "control/control_server.h"
#include "control/counter_catalog.h"
#include "control/dpi_control.h"
#include "control/eal_setup.h"
#include "control/jsonrpc.h"
#include "control/log.h"
#include "control/migration_host.h"
#include "control/rule_config.h"
#include "control/sd_notify.h"
#include "control/switch.h"
#include "control/telemetry.h"
#include "control/vhost_handover.h"
#include "ferry_version.h"
#include "migrate/file_transport.h"
#include "migrate/stages.h"
#include "migrate/stream_reader.h"
#include "migrate/takeover.h"

namespace {

constexpr int kExitUsage = 64;
constexpr int kExitConfig = 2;
constexpr int kExitRuntime = 1;

struct Options {
    std::string config;
    bool check_only = false;
    bool print_schema = false;
    std::string restore;   // a stream file installed before the workers start
    std::string takeover;  // the running ferryd's takeover socket (live upgrade)
    bool detach = false;   // fork; the parent exits once the child forwards
    ferry::LogLevel log_level = ferry::LogLevel::kInfo;
    std::vector<std::string> eal_passthrough;
};

void usage(FILE* out) {
    fprintf(out,
            "usage: ferryd --config FILE [--check] [--restore FILE | --takeover PATH]\n"
            "              [--detach] [--log-level LEVEL]\n"
            "              [-- EAL-ARGS...]\n"
            "       ferryd --print-schema | --print-counters | --version\n"
            "  --config FILE      JSON configuration (see config/schema.json)\n"
            "  --check            validate the configuration and exit\n"
            "  --takeover PATH    live upgrade: take the state, the control socket and the\n"
            "                     ports over from the ferryd listening at PATH\n"
            "                     (<control socket>.takeover)\n"
            "  --detach           run in the background: return once this ferryd forwards\n"
            "                     (after a --takeover: once it took over), 0 then, else\n"
            "                     the failed ferryd's exit status\n"
            "  --restore FILE     install the state of a stream file (migrate.save) before\n"
            "                     traffic starts; a stream that does not fit stops ferryd\n"
            "  --log-level LEVEL  debug, info (default), warn or error\n"
            "  --print-schema     print the configuration's JSON Schema and exit\n"
            "  --print-counters   print the drop reasons and conntrack counters, with what\n"
            "                     each counts (JSON, as the stats.describe method) and exit\n"
            "  -- EAL-ARGS        appended to the configuration's \"eal\" arguments\n");
}

/// Parses the command line. @return exit code to stop with, or -1 to go on.
int parse_args(int argc, char** argv, Options* o) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--") {
            for (++i; i < argc; ++i) o->eal_passthrough.emplace_back(argv[i]);
            break;
        }
        if (a == "--config" && i + 1 < argc) {
            o->config = argv[++i];
        } else if (a == "--restore" && i + 1 < argc) {
            o->restore = argv[++i];
        } else if (a == "--takeover" && i + 1 < argc) {
            o->takeover = argv[++i];
        } else if (a == "--detach") {
            o->detach = true;
        } else if (a == "--check") {
            o->check_only = true;
        } else if (a == "--print-schema") {
            o->print_schema = true;
        } else if (a == "--print-counters") {
            printf("%s\n", ferry::counter_catalog().dump(2).c_str());
            return 0;
        } else if (a == "--version") {
            printf("ferryd %s\n", FERRY_VERSION);
            return 0;
        } else if (a == "--log-level" && i + 1 < argc) {
            std::string l = argv[++i];
            if (l == "debug")
                o->log_level = ferry::LogLevel::kDebug;
            else if (l == "info")
                o->log_level = ferry::LogLevel::kInfo;
            else if (l == "warn")
                o->log_level = ferry::LogLevel::kWarn;
            else if (l == "error")
                o->log_level = ferry::LogLevel::kError;
            else {
                fprintf(stderr, "ferryd: --log-level: unknown level '%s'\n", l.c_str());
                return kExitUsage;
            }
        } else if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "ferryd: unknown or incomplete argument '%s'\n", a.c_str());
            usage(stderr);
            return kExitUsage;
        }
    }
    if (o->config.empty() && !o->print_schema) {
        usage(stderr);
        return kExitUsage;
    }
    return -1;
}

/// Forks for --detach. The parent waits for the child's word on a pipe and exits: 0 once the
/// child wrote that it forwards, else the child's exit status. Context: main thread, before the
/// EAL starts threads (they would not survive a fork). @return in the child only: the pipe's
/// write end, for report_running()
int detach() {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        perror("ferryd: --detach: pipe");
        exit(kExitRuntime);
    }
    const pid_t child = fork();
    if (child < 0) {
        perror("ferryd: --detach: fork");
        exit(kExitRuntime);
    }
    if (child == 0) {
        close(p[0]);
        setsid();  // a session of its own: the caller's terminal or reload job may go away
        return p[1];
    }
    close(p[1]);
    char word = 0;
    ssize_t r;
    do {
        r = read(p[0], &word, 1);
    } while (r < 0 && errno == EINTR);
    if (r == 1 && word == 'R') {
        printf("ferryd: pid %d forwards\n", static_cast<int>(child));
        exit(0);
    }
    // The child closed the pipe without a word: it is exiting; report its status.
    int status = 0;
    if (waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) != 0)
        exit(WEXITSTATUS(status));
    exit(kExitRuntime);
}

/// Tells a --detach parent that this ferryd forwards, once. Context: control thread.
void report_running(int* fd) {
    if (*fd < 0) return;
    const char word = 'R';
    if (write(*fd, &word, 1) != 1) FERRY_LOG_WARN("--detach: cannot tell the parent");
    close(*fd);
    *fd = -1;
}

/// Runs the switch until shutdown. Context: control thread (main lcore). ready_fd: a --detach
/// parent's pipe (or -1). @return the process exit status
int serve(const ferry::Config& cfg, const std::string& restore, const std::string& takeover,
          int ready_fd) {
    // A live upgrade: the running ferryd hands over its state and control socket and releases
    // its ports before this one creates them. Its workers pause from this one's hello on, so
    // everything but the ports is built before the hello.
    auto sw = ferry::Switch::create(cfg, takeover.empty());
    if (!sw) {
        FERRY_LOG_ERROR("%s", sw.error().message.c_str());
        ferry::notify_service_manager("STATUS=failed: " + sw.error().message);
        return kExitConfig;
    }
    ferry::Switch& s = *sw.value();
    ferry::Takeover handover;
    if (!takeover.empty()) {
        std::vector<std::string> ports;
        for (const ferry::PortConfig& p : cfg.ports) ports.push_back(p.name);
        auto t = ferry::take_over(takeover, ports, 60, [](pid_t predecessor) {
            ferry::notify_service_manager("STATUS=taking over from pid " +
                                          std::to_string(predecessor));
        });
        if (!t) {
            FERRY_LOG_ERROR_IN(kMigrate, "--takeover %s: %s", takeover.c_str(),
                               t.error().message.c_str());
            // The running switch's state does not fit this configuration: it goes on.
            return t.error().code == ferry::ErrorCode::kInvalidParams ? kExitConfig : kExitRuntime;
        }
        handover = std::move(*t);
        if (!handover.connections_error.empty())
            FERRY_LOG_WARN_IN(kMigrate, "--takeover: %s; those ports' peers reconnect",
                              handover.connections_error.c_str());
        // The predecessor's vhost-user connections: the ports adopt them as they open.
        ferry::vhost_handover_offer(std::move(handover.connections));
        // Test only: a successor that dies right after the release (the predecessor must go
        // on by itself). Unset: nothing.
        if (const char* die = std::getenv("FERRY_TEST_TAKEOVER_DIE_AFTER_RELEASE"); die && *die)
            _exit(kExitRuntime);
    }
    auto fail = [&](const std::string& why, int rc) {
        FERRY_LOG_ERROR("%s", why.c_str());
        ferry::notify_service_manager("STATUS=failed: " + why);
        ferry::takeover_end(handover, false, why);
        return rc;
    };
    if (!takeover.empty()) {
        if (ferry::Status opened = s.open_configured_ports(); !opened)
            return fail(opened.error().message, kExitConfig);
    }
    ferry::SwitchMigrationHost host(s);  // what the migration drivers see of it
    ferry::vhost_handover_discard();     // those of ports this configuration lacks
    if (!takeover.empty()) {
        auto r = ferry::takeover_install(handover, host);
        if (!r) return fail("--takeover: " + r.error().message, kExitRuntime);
        FERRY_LOG_INFO_IN(kMigrate, "took over %zu connections from ferryd %s", r->connections,
                          handover.state.ferryd_version.c_str());
    }
    if (!restore.empty()) {
        if (auto r = ferry::restore_from_file(host, restore); !r) {
            FERRY_LOG_ERROR_IN(kMigrate, "--restore %s", r.error().message.c_str());
            return kExitConfig;
        }
    }
    std::unique_ptr<ferry::JsonRpcDispatcher> dispatcher;
    dispatcher = std::make_unique<ferry::JsonRpcDispatcher>(
        ferry::make_commands(
            s, [&dispatcher] { return ferry::describe_methods(dispatcher->table()); }),
        &s);
    auto server =
        handover.control_fd >= 0
            ? ferry::ControlServer::adopt(handover.control_fd, cfg.control_socket, dispatcher.get())
            : ferry::ControlServer::listen(cfg.control_socket, dispatcher.get());
    if (!server)
        return fail("control socket " + cfg.control_socket + ": " + server.error().message,
                    kExitRuntime);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    server.value()->add_watch(sfd, [&s, sfd] {
        signalfd_siginfo si{};
        while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
            FERRY_LOG_INFO("signal %s: stopping", strsignal(static_cast<int>(si.ssi_signo)));
            s.request_shutdown();
        }
    });
    server.value()->add_watch(s.event_fd(), [&s] { s.handle_port_events(); });
    ferry::telemetry_attach(&s);
    auto st = s.start_workers();
    if (!st) {
        ferry::telemetry_detach();
        close(sfd);
        return fail(st.error().message, kExitRuntime);
    }
    // Ports exist and workers run. A successor names itself the main process before it says
    // DONE, so the service manager knows it before the predecessor exits, and never sees the
    // service's main process gone.
    const std::string forwarding = std::to_string(cfg.ports.size()) + " ports, " +
                                   std::to_string(s.worker_count()) + " workers forwarding";
    if (takeover.empty())
        ferry::notify_service_manager("READY=1\nSTATUS=" + forwarding);
    else
        ferry::notify_service_manager("MAINPID=" + std::to_string(getpid()) +
                                      "\nREADY=1\nSTATUS=" + forwarding + " (took over from pid " +
                                      std::to_string(handover.predecessor_pid) + ")");
    // The watchdog interval is in the environment of the process the service manager started;
    // a successor, started by a reload command, does not know it and pings often enough.
    uint64_t watchdog_usec = ferry::watchdog_usec_from_env();
    if (watchdog_usec == 0 && !takeover.empty() && std::getenv("NOTIFY_SOCKET") != nullptr)
        watchdog_usec = ferry::kSuccessorWatchdogUsec;
    ferry::WatchdogPinger watchdog(watchdog_usec);
    watchdog.tick();
    ferry::takeover_end(handover, true, "");
    report_running(&ready_fd);
    // The next upgrade takes over from this one.
    const std::string takeover_path = cfg.control_socket + ".takeover";
    ferry::SwitchTakeoverHost upgrade(s, *server.value());
    // It runs a hand-over from this loop, which goes on meanwhile: housekeeping and the
    // watchdog never wait for a successor.
    auto successor = ferry::TakeoverListener::listen(takeover_path, host, upgrade);
    if (!successor)
        FERRY_LOG_WARN_IN(kMigrate, "no live upgrade: %s", successor.error().message.c_str());
    FERRY_LOG_INFO("ready: %zu ports, %u workers, control socket %s", cfg.ports.size(),
                   s.worker_count(), cfg.control_socket.c_str());
    while (!s.shutdown_requested()) {
        server.value()->run_once(50);
        if (successor) successor.value()->check_deadlines();
        s.housekeeping();
        watchdog.tick();
    }
    // A hand-over still under way ends here (before RELEASE the workers resume, to be
    // stopped below).
    if (successor) successor.value()->stop();
    using Outcome = ferry::TakeoverListener::Outcome;
    const Outcome outcome = successor ? successor.value()->outcome() : Outcome::kNone;
    const pid_t successor_pid = successor ? successor.value()->successor_pid() : 0;
    // Not STOPPING=1 after a hand-over: the unit goes on in the successor, and a stop notice
    // from any process of it would have the service manager stop the unit.
    if (outcome == Outcome::kHandedOver)
        ferry::notify_service_manager("STATUS=handed over to pid " + std::to_string(successor_pid) +
                                      "; exiting");
    else if (outcome == Outcome::kSuccessorFailed)
        ferry::notify_service_manager("STATUS=the successor pid " + std::to_string(successor_pid) +
                                      " failed after the hand-over; exiting");
    else
        ferry::notify_service_manager("STOPPING=1\nSTATUS=stopping");
    // Answer the shutdown request before the socket goes away.
    server.value()->run_once(0);
    ferry::telemetry_detach();
    s.stop_workers();
    successor = ferry::make_error(ferry::ErrorCode::kFailed, "stopped");
    server.value().reset();
    close(sfd);
    sw.value().reset();
    FERRY_LOG_INFO("stopped");
    // Past the release this ferryd has no ports: a failed successor leaves no switch running,
    // which the service manager must see as a failure (and restart the unit).
    return outcome == Outcome::kSuccessorFailed ? kExitRuntime : 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    int rc = parse_args(argc, argv, &opt);
    if (rc >= 0) return rc;
    if (opt.print_schema) {
        printf("%s\n", ferry::config_schema().dump(2).c_str());
        return 0;
    }
    ferry::log_set_level(opt.log_level);
    auto cfg = ferry::load_config_file(opt.config);
    if (!cfg) {
        // Validation messages start with the key's path; say which file it is in.
        if (cfg.error().code == ferry::ErrorCode::kInvalidParams)
            fprintf(stderr, "ferryd: %s: %s\n", opt.config.c_str(), cfg.error().message.c_str());
        else
            fprintf(stderr, "ferryd: %s\n", cfg.error().message.c_str());
        return kExitConfig;
    }
    if (opt.check_only) {
        if (ferry::Status rules = ferry::check_config_rules(cfg.value()); !rules) {
            fprintf(stderr, "ferryd: %s: %s\n", opt.config.c_str(), rules.error().message.c_str());
            return kExitConfig;
        }
        if (auto dpi = ferry::compile_dpi(cfg->dpi.patterns, cfg->dpi); !dpi) {
            fprintf(stderr, "ferryd: %s: dpi.patterns: %s\n", opt.config.c_str(),
                    dpi.error().message.c_str());
            return kExitConfig;
        }
        printf("ferryd: %s is valid\n", opt.config.c_str());
        return 0;
    }
    const int ready_fd = opt.detach ? detach() : -1;
    ferry::notify_service_manager("STATUS=starting");
    ferry::EalPlan plan =
        ferry::plan_eal(cfg.value(), opt.eal_passthrough, ferry::host_free_hugepages());
    if (plan.no_huge)
        FERRY_LOG_WARN(
            "no free hugepages on this host: running with --no-huge (memfd-backed memory)");
    if (!opt.takeover.empty()) {
        // The predecessor runs with the configured prefix until the hand-over: a prefix of our
        // own for the EAL's runtime files.
        for (size_t i = 0; i + 1 < plan.args.size(); ++i)
            if (plan.args[i] == "--file-prefix") {
                plan.args[i + 1].append("-").append(std::to_string(getpid()));
                plan.file_prefix = plan.args[i + 1];
            }
    }

    // Signals are taken through a signalfd by the control thread; block them before the EAL
    // starts its threads so they inherit the mask.
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &mask, nullptr);
    signal(SIGPIPE, SIG_IGN);

    std::vector<char*> eal_argv;
    for (auto& a : plan.args) eal_argv.push_back(a.data());
    eal_argv.push_back(nullptr);
    if (rte_eal_init(static_cast<int>(plan.args.size()), eal_argv.data()) < 0) {
        FERRY_LOG_ERROR("EAL initialisation failed (arguments:%s)",
                        [&] {
                            std::string s;
                            for (auto& a : plan.args) s += " " + a;
                            return s;
                        }()
                            .c_str());
        return kExitRuntime;
    }
    std::string runtime_dir = rte_eal_get_runtime_dir();
    if (rte_pdump_init() != 0) FERRY_LOG_WARN("packet capture (rte_pdump) unavailable");
    rc = serve(cfg.value(), opt.restore, opt.takeover, ready_fd);
    rte_pdump_uninit();
    rte_eal_cleanup();
    ferry::remove_runtime_dir(runtime_dir);
    return rc;
}
