#include "control/eal_setup.h"

#include <sys/statfs.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace ferry {
namespace {

bool has_arg(const std::vector<std::string>& args, std::initializer_list<const char*> names) {
    for (const auto& a : args)
        for (const char* n : names)
            if (a == n || a.rfind(std::string(n) + "=", 0) == 0) return true;
    return false;
}

std::string arg_value(const std::vector<std::string>& args, const char* name) {
    for (size_t i = 0; i < args.size(); ++i) {
        if (args[i] == name && i + 1 < args.size()) return args[i + 1];
        std::string eq = std::string(name) + "=";
        if (args[i].rfind(eq, 0) == 0) return args[i].substr(eq.size());
    }
    return {};
}

bool hugetlbfs_mounted() {
    std::ifstream mounts("/proc/mounts");
    std::string dev, dir, type;
    std::string rest;
    while (mounts >> dev >> dir >> type && std::getline(mounts, rest))
        if (type == "hugetlbfs") return true;
    return false;
}

}  // namespace

unsigned host_free_hugepages() {
    if (!hugetlbfs_mounted()) return 0;
    std::ifstream meminfo("/proc/meminfo");
    std::string line;
    while (std::getline(meminfo, line)) {
        if (line.rfind("HugePages_Free:", 0) == 0) {
            std::istringstream in(line.substr(15));
            unsigned n = 0;
            in >> n;
            return n;
        }
    }
    return 0;
}

EalPlan plan_eal(const Config& cfg, const std::vector<std::string>& passthrough,
                 unsigned free_hugepages) {
    EalPlan plan;
    plan.args.push_back("ferryd");
    plan.args.insert(plan.args.end(), cfg.eal.begin(), cfg.eal.end());
    plan.args.insert(plan.args.end(), passthrough.begin(), passthrough.end());
    if (!has_arg(plan.args, {"--file-prefix"})) {
        plan.args.push_back("--file-prefix");
        plan.args.push_back("ferry");
    }
    plan.file_prefix = arg_value(plan.args, "--file-prefix");
    bool decided = has_arg(plan.args, {"--no-huge", "--huge-dir", "--in-memory"});
    // 64 pages (128 MiB) hold the default mbuf pool and tables; fewer is not worth the risk.
    if (!decided && free_hugepages < 64) {
        plan.no_huge = true;
        plan.args.push_back("--no-huge");
        if (!has_arg(plan.args, {"-m", "--socket-mem"})) {
            plan.args.push_back("-m");
            plan.args.push_back("1024");
        }
    }
    return plan;
}

void remove_runtime_dir(const std::string& dir) {
    std::error_code ec;
    if (!dir.empty() && dir.find("/dpdk/") != std::string::npos)
        std::filesystem::remove_all(dir, ec);
}

}  // namespace ferry
