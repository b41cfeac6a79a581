// Entry point of unit tests that need DPDK's EAL: initialises it without hugepages, in memory,
// with a file prefix of its own so parallel test processes do not collide.
#include <gtest/gtest.h>
#include <rte_eal.h>
#include <unistd.h>

#include <filesystem>
#include <string>

int main(int argc, char** argv) {
    testing::InitGoogleTest(&argc, argv);
    std::string prefix = "ferry-unit-" + std::to_string(getpid());
    const char* eal_argv[] = {"test",           "--no-huge",   "-m",    "256",      "--no-pci",
                              "--no-telemetry", "--log-level", "error", "--lcores", "0@0",
                              "--file-prefix",  prefix.c_str()};
    if (rte_eal_init(static_cast<int>(std::size(eal_argv)), const_cast<char**>(eal_argv)) < 0) {
        fprintf(stderr, "EAL init failed\n");
        return 2;
    }
    int rc = RUN_ALL_TESTS();
    std::string runtime_dir = rte_eal_get_runtime_dir();
    rte_eal_cleanup();
    std::error_code ec;
    std::filesystem::remove_all(runtime_dir, ec);
    return rc;
}
