// Unit tests of ferryd's configuration parser: each test feeds a JSON document to parse_config
// (or a port object to parse_port_config, or a file to load_config_file) and expects either the
// parsed values or a refusal whose message names the offending key by its exact path.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "control/config.h"

namespace ferry {
namespace {

using nlohmann::json;

// The source tree: $FERRY_SOURCE_ROOT, else derived from this file's path. Meson compiles with a
// path relative to the build directory, so a relative __FILE__ is tried from the working
// directory and from the build directory (two levels above this test's binary).
std::filesystem::path source_root() {
    if (const char* env = std::getenv("FERRY_SOURCE_ROOT")) return env;
    std::filesystem::path rel = std::filesystem::path(__FILE__).parent_path() / "../..";
    if (rel.is_absolute() || std::filesystem::exists(rel / "config/schema.json")) return rel;
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    return exe.parent_path() / "../.." / rel;
}

std::string read_text(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// A valid document with one port of each type; tests change one thing in it.
json base_doc() {
    return json::parse(R"({
        "workers": [1, 2],
        "ports": [
            { "name": "vm1", "type": "vhost-user", "path": "/tmp/vm1.sock" },
            { "name": "wire", "type": "dpdk", "devargs": "net_null0" }
        ]
    })");
}

// The error message parse_config gives for doc, or "OK" when it accepts it.
std::string error_of(const json& doc) {
    Result<Config> r = parse_config(doc);
    if (r.ok()) return "OK";
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidParams);
    return r.error().message;
}

// Same, for a change made by patch to base_doc().
template <class F>
std::string error_after(F patch) {
    json doc = base_doc();
    patch(doc);
    return error_of(doc);
}

TEST(Config, ContractExampleParses) {
    const json doc = json::parse(R"({
      "eal": ["--lcores", "0@0,1@1", "--file-prefix", "ferry"],
      "control": { "socket": "/run/ferry/ferryd.sock" },
      "workers": [1],
      "ports": [
        { "name": "vm1", "type": "vhost-user", "path": "/tmp/vm1.sock", "mode": "server", "queues": 1 },
        { "name": "vm2", "type": "vhost-user", "path": "/tmp/vm2.sock", "mode": "client" },
        { "name": "wire", "type": "dpdk", "devargs": "net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap" } ] })");
    Result<Config> r = parse_config(doc);
    ASSERT_TRUE(r.ok()) << r.error().message;
    const Config& c = *r;
    EXPECT_EQ(c.eal, (std::vector<std::string>{"--lcores", "0@0,1@1", "--file-prefix", "ferry"}));
    EXPECT_EQ(c.control_socket, "/run/ferry/ferryd.sock");
    EXPECT_EQ(c.workers, std::vector<unsigned>{1});
    ASSERT_EQ(c.ports.size(), 3u);
    EXPECT_EQ(c.ports[0].name, "vm1");
    EXPECT_EQ(c.ports[0].type, PortType::kVhostUser);
    EXPECT_EQ(c.ports[0].path, "/tmp/vm1.sock");
    EXPECT_EQ(c.ports[0].mode, VhostMode::kServer);
    EXPECT_EQ(c.ports[0].queues, 1);
    EXPECT_EQ(c.ports[1].name, "vm2");
    EXPECT_EQ(c.ports[1].path, "/tmp/vm2.sock");
    EXPECT_EQ(c.ports[1].mode, VhostMode::kClient);
    EXPECT_EQ(c.ports[2].name, "wire");
    EXPECT_EQ(c.ports[2].type, PortType::kDpdk);
    EXPECT_EQ(c.ports[2].devargs, "net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap");
    EXPECT_TRUE(c.ports[2].path.empty());
}

TEST(Config, DefaultsFillWhatIsAbsent) {
    Result<Config> r = parse_config(json::parse(R"({"workers": [3]})"));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_TRUE(r->eal.empty());
    EXPECT_EQ(r->control_socket, "/run/ferry/ferryd.sock");
    EXPECT_TRUE(r->ports.empty());
    EXPECT_TRUE(r->idle.enabled);
    EXPECT_EQ(r->idle.min_us, 1u);
    EXPECT_EQ(r->idle.max_us, 200u);
    EXPECT_EQ(r->idle.idle_polls, 256u);
    EXPECT_EQ(r->mac_table_size, 65536u);
    EXPECT_EQ(r->mac_aging_s, 300u);
    EXPECT_EQ(r->mbufs, 16384u);

    // Empty nested objects keep the defaults too.
    r = parse_config(json::parse(R"({"workers": [3], "control": {}, "idle_backoff": {},
                                     "mac_table": {}, "ports": [], "eal": []})"));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->control_socket, "/run/ferry/ferryd.sock");

    Result<PortConfig> p =
        parse_port_config(json::parse(R"({"name": "p", "type": "vhost-user", "path": "/x"})"), "");
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_EQ(p->mode, VhostMode::kServer);
    EXPECT_EQ(p->queues, 1);
    EXPECT_EQ(p->mtu, 1500);
    EXPECT_TRUE(p->rx_pin.empty());
    EXPECT_EQ(p->vlan_mode, VlanMode::kTrunk);
    EXPECT_EQ(p->tag, 0);
    EXPECT_TRUE(p->trunks.empty());
}

TEST(Config, VlanAndPinningParse) {
    json doc = base_doc();
    doc["ports"][0].update(
        json::parse(R"({"queues": 2, "rx_pin": [2, 1], "vlan_mode": "access", "tag": 4094})"));
    doc["ports"][1].update(json::parse(R"({"tag": 7, "trunks": [7, 100]})"));
    Result<Config> r = parse_config(doc);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->ports[0].queues, 2);
    EXPECT_EQ(r->ports[0].rx_pin, (std::vector<unsigned>{2, 1}));
    EXPECT_EQ(r->ports[0].vlan_mode, VlanMode::kAccess);
    EXPECT_EQ(r->ports[0].tag, 4094);
    EXPECT_EQ(r->ports[1].vlan_mode, VlanMode::kTrunk);
    EXPECT_EQ(r->ports[1].tag, 7);
    EXPECT_EQ(r->ports[1].trunks, (std::vector<uint16_t>{7, 100}));
}

TEST(Config, ZonePortLimitParses) {
    json doc = base_doc();
    doc["conntrack"] =
        json::parse(R"({"zones": [{"zone": 1, "limit": 1000, "port_limit": 100}, {"zone": 2}]})");
    Result<Config> r = parse_config(doc);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r->conntrack.zones.size(), 2u);
    EXPECT_EQ(r->conntrack.zones[0].limit, 1000u);
    EXPECT_EQ(r->conntrack.zones[0].port_limit, 100u);
    EXPECT_EQ(r->conntrack.zones[1].port_limit, 0u);
    EXPECT_NE(error_after([](json& d) {
                  d["conntrack"] = json::parse(R"({"zones": [{"zone": 1, "port_limit": -1}]})");
              }),
              "OK");
}

TEST(Config, RefusesUnknownKeys) {
    EXPECT_EQ(error_after([](json& d) { d["colour"] = "red"; }), "colour: unknown key");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["colour"] = "red"; }),
              "ports[0].colour: unknown key");
    EXPECT_EQ(error_after([](json& d) {
                  d["idle_backoff"] = {{"enable", true}};
              }),
              "idle_backoff.enable: unknown key");
    EXPECT_EQ(error_after([](json& d) {
                  d["control"] = {{"sock", "/x"}};
              }),
              "control.sock: unknown key");
    EXPECT_EQ(error_after([](json& d) {
                  d["mac_table"] = {{"aging", 10}};
              }),
              "mac_table.aging: unknown key");
}

TEST(Config, RefusesWrongTypes) {
    EXPECT_EQ(error_of(json::array()), "<root>: must be an object");
    EXPECT_EQ(error_of(json("x")), "<root>: must be an object");
    EXPECT_EQ(error_after([](json& d) { d["ports"][1]["name"] = 5; }),
              "ports[1].name: must be a string");
    EXPECT_EQ(error_after([](json& d) {
                  d["control"] = {{"socket", 5}};
              }),
              "control.socket: must be a string");
    EXPECT_EQ(error_after([](json& d) { d["control"] = "/x"; }), "control: must be an object");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["queues"] = "2"; }),
              "ports[0].queues: must be an integer in 1..16");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["queues"] = 1.5; }),
              "ports[0].queues: must be an integer in 1..16");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["mode"] = true; }),
              "ports[0].mode: must be one of \"server\", \"client\"");
    EXPECT_EQ(error_after([](json& d) {
                  d["idle_backoff"] = {{"enabled", "yes"}};
              }),
              "idle_backoff.enabled: must be a boolean");
    EXPECT_EQ(error_after([](json& d) { d["workers"] = 1; }), "workers: must be an array");
    EXPECT_EQ(error_after([](json& d) { d["eal"] = {"-l", 1}; }), "eal[1]: must be a string");
    EXPECT_EQ(error_after([](json& d) {
                  d["ports"] = {{{"name", "x"}}};
              }),
              "ports[0].type: required");
    EXPECT_EQ(error_after([](json& d) { d["ports"][1] = "wire"; }), "ports[1]: must be an object");
}

TEST(Config, RefusesMissingRequired) {
    EXPECT_EQ(error_after([](json& d) { d.erase("workers"); }), "workers: required");
    EXPECT_EQ(error_after([](json& d) {
                  d["ports"].push_back({{"type", "vhost-user"}, {"path", "/x"}});
              }),
              "ports[2].name: required");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0].erase("type"); }), "ports[0].type: required");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0].erase("path"); }), "ports[0].path: required");
    EXPECT_EQ(error_after([](json& d) { d["ports"][1].erase("devargs"); }),
              "ports[1].devargs: required");
}

TEST(Config, MtuParsesWithinItsRange) {
    json doc = base_doc();
    doc["ports"][0]["mtu"] = 9000;
    Result<Config> r = parse_config(doc);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->ports[0].mtu, 9000);
    EXPECT_EQ(r->ports[1].mtu, 1500);
    doc["ports"][1]["mtu"] = 68;
    r = parse_config(doc);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->ports[1].mtu, 68);
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["mtu"] = 9001; }),
              "ports[0].mtu: must be an integer in 68..9000");
    EXPECT_EQ(error_after([](json& d) { d["ports"][1]["mtu"] = 67; }),
              "ports[1].mtu: must be an integer in 68..9000");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["mtu"] = "9000"; }),
              "ports[0].mtu: must be an integer in 68..9000");
}

TEST(Config, RefusesOutOfRange) {
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["queues"] = 17; }),
              "ports[0].queues: must be an integer in 1..16");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["queues"] = 0; }),
              "ports[0].queues: must be an integer in 1..16");
    EXPECT_EQ(error_after([](json& d) {
                  d["workers"] = {1, 128};
              }),
              "workers[1]: must be an integer in 0..127");
    EXPECT_EQ(error_after([](json& d) { d["workers"] = {-1}; }),
              "workers[0]: must be an integer in 0..127");
    EXPECT_EQ(error_after([](json& d) { d["workers"] = json::array(); }),
              "workers: must not be empty");
    EXPECT_EQ(error_after([](json& d) {
                  d["workers"] = json::array();
                  for (int i = 0; i <= kMaxWorkers; ++i) d["workers"].push_back(i);
              }),
              "workers: must have at most 16 items");
    EXPECT_EQ(error_after([](json& d) {
                  json p = d["ports"][1];
                  d["ports"] = json::array();
                  for (int i = 0; i <= kMaxPorts; ++i) {
                      p["name"] = std::string("p").append(std::to_string(i));
                      d["ports"].push_back(p);
                  }
              }),
              "ports: must have at most 64 items");
    EXPECT_EQ(error_after([](json& d) { d["mbufs"] = 2047; }),
              "mbufs: must be an integer in 2048..1048576");
    EXPECT_EQ(error_after([](json& d) {
                  d["mac_table"] = {{"size", 1023}};
              }),
              "mac_table.size: must be an integer in 1024..4194304");
    EXPECT_EQ(error_after([](json& d) {
                  d["mac_table"] = {{"aging_s", 86401}};
              }),
              "mac_table.aging_s: must be an integer in 10..86400");
    EXPECT_EQ(error_after([](json& d) {
                  d["idle_backoff"] = {{"min_us", 0}};
              }),
              "idle_backoff.min_us: must be an integer in 1..1000000");
    EXPECT_EQ(error_after([](json& d) {
                  d["idle_backoff"] = {{"max_us", 1000001}};
              }),
              "idle_backoff.max_us: must be an integer in 1..1000000");
    EXPECT_EQ(error_after([](json& d) {
                  d["idle_backoff"] = {{"idle_polls", 0}};
              }),
              "idle_backoff.idle_polls: must be an integer in 1..1000000");
    EXPECT_EQ(error_after([](json& d) {
                  d["idle_backoff"] = {{"min_us", 10}, {"max_us", 5}};
              }),
              "idle_backoff.max_us: must be at least min_us (10), is 5");
    // The default max_us (200) counts too.
    EXPECT_EQ(error_after([](json& d) {
                  d["idle_backoff"] = {{"min_us", 500}};
              }),
              "idle_backoff.max_us: must be at least min_us (500), is 200");
    EXPECT_EQ(error_after([](json& d) {
                  d["idle_backoff"] = {{"min_us", 7}, {"max_us", 7}};
              }),
              "OK");
    EXPECT_EQ(error_after([](json& d) { d["ports"][1]["tag"] = 4095; }),
              "ports[1].tag: must be an integer in 0..4094");
    EXPECT_EQ(error_after([](json& d) {
                  d["ports"][1]["trunks"] = {10, 0};
              }),
              "ports[1].trunks[1]: must be an integer in 1..4094");
}

TEST(Config, RefusesBadStrings) {
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["name"] = "vm 1"; }),
              "ports[0].name: must be 1..31 characters from A-Z a-z 0-9 _ . -");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["name"] = ""; }),
              "ports[0].name: must be 1..31 characters from A-Z a-z 0-9 _ . -");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["name"] = std::string(32, 'a'); }),
              "ports[0].name: must be 1..31 characters from A-Z a-z 0-9 _ . -");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["name"] = "A-z_0.9"; }), "OK");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["type"] = "tap"; }),
              "ports[0].type: must be one of \"vhost-user\", \"dpdk\"");
    EXPECT_EQ(
        error_after([](json& d) { d["ports"][1]["devargs"] = "net_null0, x=1"; }),
        "ports[1].devargs: must be a non-empty string of at most 4096 bytes without whitespace");
    EXPECT_EQ(
        error_after([](json& d) { d["ports"][1]["devargs"] = ""; }),
        "ports[1].devargs: must be a non-empty string of at most 4096 bytes without whitespace");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["path"] = ""; }),
              "ports[0].path: must be an absolute socket path shorter than 108 bytes");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["path"] = "vm1.sock"; }),
              "ports[0].path: must be an absolute socket path shorter than 108 bytes");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["vlan_mode"] = "hybrid"; }),
              "ports[0].vlan_mode: must be one of \"trunk\", \"access\"");
}

TEST(Config, SunPathLimit) {
    const std::string ok_path = "/" + std::string(106, 'a');  // 107 bytes + NUL fits sun_path
    EXPECT_EQ(error_after([&](json& d) { d["ports"][0]["path"] = ok_path; }), "OK");
    EXPECT_EQ(error_after([&](json& d) { d["ports"][0]["path"] = ok_path + "a"; }),
              "ports[0].path: must be an absolute socket path shorter than 108 bytes");
    EXPECT_EQ(error_after([&](json& d) {
                  d["control"] = {{"socket", ok_path + "a"}};
              }),
              "control.socket: must be a non-empty socket path shorter than 108 bytes");
}

TEST(Config, RefusesDuplicates) {
    EXPECT_EQ(error_after([](json& d) { d["ports"][1]["name"] = "vm1"; }),
              "ports[1].name: duplicate port name \"vm1\" (also ports[0])");
    EXPECT_EQ(error_after([](json& d) {
                  d["workers"] = {1, 2, 1};
              }),
              "workers[2]: duplicate of workers[0]");
    EXPECT_EQ(error_after([](json& d) {
                  d["ports"][1]["trunks"] = {10, 20, 20};
              }),
              "ports[1].trunks[2]: duplicate of ports[1].trunks[1]");
}

TEST(Config, RefusesBadRxPin) {
    EXPECT_EQ(error_after([](json& d) {
                  d["ports"][0]["queues"] = 2;
                  d["ports"][0]["rx_pin"] = {1, 3};
              }),
              "ports[0].rx_pin[1]: lcore 3 is not one of \"workers\"");
    EXPECT_EQ(error_after([](json& d) {
                  d["ports"][1]["queues"] = 2;
                  d["ports"][1]["rx_pin"] = {1};
              }),
              "ports[1].rx_pin: must have one entry per queue (queues is 2, rx_pin has 1)");
    EXPECT_EQ(error_after([](json& d) {
                  d["ports"][1]["rx_pin"] = {1, 2};
              }),
              "ports[1].rx_pin: must have one entry per queue (queues is 1, rx_pin has 2)");
    EXPECT_EQ(error_after([](json& d) { d["ports"][1]["rx_pin"] = json::array(); }),
              "ports[1].rx_pin: must not be empty");
    // Two queues may share a worker.
    EXPECT_EQ(error_after([](json& d) {
                  d["ports"][1]["queues"] = 2;
                  d["ports"][1]["rx_pin"] = {2, 2};
              }),
              "OK");
}

TEST(Config, RefusesKeysOfTheOtherVariant) {
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["vlan_mode"] = "access"; }),
              "ports[0].tag: required");
    EXPECT_EQ(error_after([](json& d) {
                  d["ports"][0].update({{"vlan_mode", "access"}, {"tag", 0}});
              }),
              "ports[0].tag: must be an integer in 1..4094");
    EXPECT_EQ(error_after([](json& d) {
                  d["ports"][0].update({{"vlan_mode", "access"}, {"tag", 5}, {"trunks", {5}}});
              }),
              "ports[0].trunks: only allowed when vlan_mode is \"trunk\"");
    EXPECT_EQ(error_after([](json& d) { d["ports"][1]["path"] = "/tmp/x.sock"; }),
              "ports[1].path: only allowed when type is \"vhost-user\"");
    EXPECT_EQ(error_after([](json& d) { d["ports"][1]["mode"] = "client"; }),
              "ports[1].mode: only allowed when type is \"vhost-user\"");
    EXPECT_EQ(error_after([](json& d) { d["ports"][0]["devargs"] = "net_null1"; }),
              "ports[0].devargs: only allowed when type is \"dpdk\"");
}

TEST(Config, PortConfigUsesTheGivenPath) {
    Result<PortConfig> p = parse_port_config(
        json::parse(R"({"name": "p", "type": "dpdk", "devargs": "net_null0", "queues": 99})"),
        "params");
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error().code, ErrorCode::kInvalidParams);
    EXPECT_EQ(p.error().message, "params.queues: must be an integer in 1..16");

    p = parse_port_config(json::parse(R"({"name": "p", "type": "dpdk", "devargs": "net_null0"})"),
                          "params");
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_EQ(p->devargs, "net_null0");
}

// A file in a fresh temporary directory, removed at the end of the test.
class TempFile {
public:
    explicit TempFile(const std::string& text) {
        std::string tmpl =
            (std::filesystem::temp_directory_path() / "ferry-config-XXXXXX").string();
        dir_ = mkdtemp(tmpl.data());
        path_ = dir_ + "/ferry.json";
        std::ofstream(path_) << text;
    }
    ~TempFile() { std::filesystem::remove_all(dir_); }
    const std::string& path() const { return path_; }

private:
    std::string dir_;
    std::string path_;
};

TEST(Config, LoadFileErrorsNameTheFile) {
    Result<Config> r = load_config_file("/nonexistent/ferry.json");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "/nonexistent/ferry.json: cannot open: No such file or directory");

    TempFile bad("{\"workers\": [1],\n \"mbufs\": x}\n");
    r = load_config_file(bad.path());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kParseError);
    const std::string prefix = bad.path() + ": invalid JSON at byte 28: ";
    EXPECT_EQ(r.error().message.substr(0, prefix.size()), prefix) << r.error().message;
    EXPECT_NE(r.error().message.find("line 2"), std::string::npos) << r.error().message;

    TempFile invalid(R"({"workers": [1], "mbufs": 1})");
    r = load_config_file(invalid.path());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "mbufs: must be an integer in 2048..1048576");

    TempFile good(R"({"workers": [1], "mbufs": 4096})");
    r = load_config_file(good.path());
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->mbufs, 4096u);
}

TEST(Config, ExampleFilesParse) {
    Result<Config> demo = load_config_file((source_root() / "config/demo.json").string());
    ASSERT_TRUE(demo.ok()) << demo.error().message;
    EXPECT_EQ(demo->control_socket, "/tmp/ferry-demo/ferryd.sock");
    EXPECT_EQ(demo->workers, std::vector<unsigned>{1});
    ASSERT_EQ(demo->ports.size(), 2u);
    EXPECT_EQ(demo->ports[1].path, "/tmp/ferry-demo/vm2.sock");
    EXPECT_TRUE(demo->idle.enabled);

    Result<Config> full = load_config_file((source_root() / "config/example-full.json").string());
    ASSERT_TRUE(full.ok()) << full.error().message;
    ASSERT_EQ(full->ports.size(), 3u);
    EXPECT_EQ(full->ports[0].vlan_mode, VlanMode::kAccess);
    EXPECT_EQ(full->ports[0].tag, 10);
    EXPECT_EQ(full->ports[1].trunks, (std::vector<uint16_t>{10, 20}));
    EXPECT_EQ(full->ports[2].rx_pin, std::vector<unsigned>{2});
    EXPECT_EQ(full->migration.tls_creds, "/etc/ferry/tls");
    EXPECT_EQ(full->migration.tls_peer, "hosta");
}

// Every key the schema knows appears in example-full.json, so the example stays complete.
TEST(Config, FullExampleShowsEveryKey) {
    const json schema = config_schema();
    const json full = json::parse(read_text(source_root() / "config/example-full.json"));
    for (const auto& [key, sub] : schema["properties"].items()) {
        ASSERT_TRUE(full.contains(key)) << key;
        if (sub.contains("properties")) {
            for (const auto& [inner, unused] : sub["properties"].items()) {
                EXPECT_TRUE(full[key].contains(inner)) << key << "." << inner;
            }
        }
    }
    std::set<std::string> port_keys;
    for (const json& p : full["ports"]) {
        for (const auto& [key, unused] : p.items()) port_keys.insert(key);
    }
    for (const auto& [key, unused] : schema["$defs"]["port"]["properties"].items()) {
        EXPECT_TRUE(port_keys.count(key)) << "ports[]." << key;
    }
}

TEST(Config, SchemaFileMatchesGeneratedSchema) {
    const std::filesystem::path file = source_root() / "config/schema.json";
    const std::string text = read_text(file);
    ASSERT_FALSE(text.empty()) << "cannot read " << file;
    EXPECT_EQ(json::parse(text), config_schema())
        << "config/schema.json is stale; regenerate it from config_schema().dump(2)";
}

TEST(Config, SchemaDescribesTheParsedKeys) {
    const json schema = config_schema();
    EXPECT_EQ(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    EXPECT_EQ(schema["additionalProperties"], false);
    std::set<std::string> root;
    for (const auto& [key, unused] : schema["properties"].items()) root.insert(key);
    EXPECT_EQ(root,
              (std::set<std::string>{"eal", "control", "workers", "ports", "idle_backoff",
                                     "flow_cache", "max_rules", "meters", "rules", "mac_table",
                                     "mbufs", "conntrack", "dpi", "log", "migration"}));
    std::set<std::string> port;
    for (const auto& [key, unused] : schema["$defs"]["port"]["properties"].items()) {
        port.insert(key);
    }
    EXPECT_EQ(port,
              (std::set<std::string>{"name", "type", "path", "mode", "devargs", "queues", "mtu",
                                     "rx_pin", "vlan_mode", "tag", "trunks", "security"}));
    EXPECT_EQ(schema["required"], json::array({"workers"}));
}

}  // namespace
}  // namespace ferry

namespace ferry {
namespace {

json meter(uint64_t id, uint64_t cir, uint64_t pir) {
    return {
        {"id", id}, {"cir_kbps", cir}, {"cbs_bytes", 2048}, {"pir_kbps", pir}, {"pbs_bytes", 4096}};
}

TEST(Config, MetersRulesAndFlowCacheParse) {
    json doc = base_doc();
    doc["meters"] = json::array({meter(1, 1000, 2000), meter(7, 5, 5)});
    doc["rules"] = json::array({{{"id", 1}, {"actions", {"normal"}}}});
    doc["flow_cache"] = {{"entries", 4096}};
    doc["max_rules"] = 2048;
    Result<Config> c = parse_config(doc);
    ASSERT_TRUE(c.ok()) << c.error().message;
    ASSERT_EQ(c->meters.size(), 2u);
    EXPECT_EQ(c->meters[1].id, 7u);
    EXPECT_EQ(c->meters[0].pir_kbps, 2000u);
    ASSERT_EQ(c->rules.size(), 1u);
    EXPECT_EQ(c->rules[0]["id"], 1);
    EXPECT_EQ(c->flow_cache_entries, 4096u);
    EXPECT_EQ(c->max_rules, 2048u);
}

TEST(Config, RefusesBadMetersAndRules) {
    EXPECT_EQ(error_after([](json& d) { d["meters"] = json::array({meter(1, 2000, 1000)}); }),
              "meters[0].pir_kbps: must be >= cir_kbps");
    EXPECT_EQ(error_after([](json& d) {
                  d["meters"] = json::array({meter(1, 1, 1), meter(1, 2, 2)});
              }),
              "meters[1].id: duplicate meter id 1");
    EXPECT_EQ(error_after([](json& d) { d["meters"] = json::array({meter(256, 1, 1)}); }),
              "meters[0].id: must be an integer in 0..255");
    EXPECT_EQ(error_after([](json& d) { d["rules"] = json::array({"drop"}); }),
              "rules[0]: must be an object");
    EXPECT_EQ(error_after([](json& d) {
                  d["flow_cache"] = {{"entries", 10}};
              }),
              "flow_cache.entries: must be an integer in 1024..16777216");
}

}  // namespace
}  // namespace ferry

namespace ferry {
namespace {

// Found by fuzz_config: a long devargs made the regex matcher recurse past the stack, and a
// deeply nested rule made copying the document do the same.
TEST(Config, HostileSizesAreRefusedNotCrashed) {
    EXPECT_EQ(error_after([](json& d) { d["ports"][1]["devargs"] = std::string(100000, 'a'); }),
              "ports[1].devargs: must be a non-empty string of at most 4096 bytes without "
              "whitespace");
    json deep = json::array();
    for (int i = 0; i < 5000; ++i) deep = json::array({std::move(deep)});
    EXPECT_EQ(error_after([&](json& d) {
                  d["rules"] = json::array({{{"a", deep}}});
              }),
              "<root>: nested more than 64 levels");
}

}  // namespace
}  // namespace ferry

namespace ferry {
namespace {

using nlohmann::json;

TEST(Config, DpiSectionAndPatterns) {
    Result<Config> c = parse_config(json::parse(R"({"workers": [1], "dpi": {"depth_kib": 8,
        "streams_per_worker": 64, "memory_mb": 2, "patterns": [
        {"id": 1, "regex": "a.b", "flags": ["caseless", "single_match"], "direction": "to_client",
         "action": "drop"},
        {"id": 7, "regex": "x", "action": "mark", "mark": 9}]}})"));
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->dpi.depth_kib, 8u);
    EXPECT_EQ(c->dpi.streams_per_worker, 64u);
    EXPECT_EQ(c->dpi.memory_mb, 2u);
    ASSERT_EQ(c->dpi.patterns.size(), 2u);
    EXPECT_EQ(c->dpi.patterns[0].flags, kDpiCaseless | kDpiSingleMatch);
    EXPECT_EQ(c->dpi.patterns[0].direction, DpiDirection::kToClient);
    EXPECT_EQ(c->dpi.patterns[0].action, DpiVerdictKind::kDrop);
    EXPECT_EQ(c->dpi.patterns[1].action, DpiVerdictKind::kMark);
    EXPECT_EQ(c->dpi.patterns[1].mark, 9u);
    EXPECT_EQ(c->dpi.patterns[1].direction, DpiDirection::kBoth);
}

TEST(Config, DpiPatternErrorsNameTheKey) {
    const std::pair<const char*, const char*> cases[] = {
        {R"([{"id": 1, "regex": "a"}, {"id": 1, "regex": "b"}])",
         "dpi.patterns[1].id: duplicate id 1"},
        {R"([{"id": 1, "regex": "a", "mark": 3}])",
         "dpi.patterns[0].mark: only allowed when action"},
        {R"([{"id": 1, "regex": "a", "action": "mark"}])", "dpi.patterns[0].mark: required"},
        {R"([{"id": 1, "regex": "a\u0000b"}])", "dpi.patterns[0].regex: contains a NUL byte"},
        {R"([{"id": 1, "regex": ""}])", "dpi.patterns[0].regex"},
        {R"([{"id": 1, "regex": "a", "flags": ["loud"]}])", "dpi.patterns[0].flags[0]"},
        {R"([{"id": 1, "regex": "a", "direction": "up"}])", "dpi.patterns[0].direction"},
        {R"([{"regex": "a"}])", "dpi.patterns[0].id: required"},
    };
    for (const auto& [patterns, want] : cases) {
        const json doc =
            json::parse(std::string(R"({"workers": [1], "dpi": {"patterns": )") + patterns + "}}");
        Result<Config> c = parse_config(doc);
        ASSERT_FALSE(c) << patterns;
        EXPECT_NE(c.error().message.find(want), std::string::npos)
            << patterns << " -> " << c.error().message;
    }
}

}  // namespace
}  // namespace ferry
