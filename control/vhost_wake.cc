#include "control/vhost_wake.h"

#include <dirent.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>

namespace ferry {
namespace {

// Unused elsewhere in ferryd; its default action (ignore) would not interrupt poll(), hence
// the handler.
constexpr int kWakeSignal = SIGURG;
constexpr const char* kThreadName = "vhost-events";  // rte_vhost_driver_start()'s name for it

void do_nothing(int) {}

}  // namespace

bool vhost_events_wake() {
    static std::once_flag handler;
    std::call_once(handler, [] {
        struct sigaction sa {};
        sa.sa_handler = do_nothing;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(kWakeSignal, &sa, nullptr);
    });
    DIR* tasks = opendir("/proc/self/task");
    if (tasks == nullptr) return false;
    bool woken = false;
    while (const dirent* e = readdir(tasks)) {
        if (e->d_name[0] == '.') continue;
        std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
        std::string name;
        if (!std::getline(comm, name) || name != kThreadName) continue;
        const long tid = std::strtol(e->d_name, nullptr, 10);
        woken = syscall(SYS_tgkill, getpid(), tid, kWakeSignal) == 0 || woken;
    }
    closedir(tasks);
    return woken;
}

}  // namespace ferry
